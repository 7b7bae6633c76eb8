"""Prefect flows: thin DAGs that wire tasks together and pass ids and configs, never tensors."""
