"""RSIR's generate-and-filter stage: synthetic continuations of users' own histories."""
