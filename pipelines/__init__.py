"""The jobs and the detection maths. Importable and testable without Dagster."""
