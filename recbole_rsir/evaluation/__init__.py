"""How a trained model is ranked: RecBole's full-sort evaluation, with the RSIR reference code's
protocol (earlier items masked) and a faster equal path for backbones."""
