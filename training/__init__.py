"""The offline half (torch): data, text encoding, models, losses, training and evaluation."""
