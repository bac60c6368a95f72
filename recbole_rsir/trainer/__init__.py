"""Trainers only: RSIRTrainer (RecBole's Trainer with RSIR's fast paths) and its parts."""
