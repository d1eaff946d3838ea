"""Losses of the training chain, as TorchRL LossModules."""
