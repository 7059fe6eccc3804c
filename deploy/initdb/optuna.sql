-- Run once by the postgres image when its data volume is new: the Optuna storage gets its own
-- database beside MLflow's (POSTGRES_DB=mlflow), since both libraries keep an alembic_version
-- table of their own.
CREATE DATABASE optuna;
