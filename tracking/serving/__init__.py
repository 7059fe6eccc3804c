"""The logged MLflow model: logging it, loading it, the code it serves with."""
