"""What a trained model says about the test split: metrics, predictions, figures."""
