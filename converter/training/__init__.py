"""Fine-tuning flows: class folders of videos -> a trained Keras model and its torchvision state dict."""
