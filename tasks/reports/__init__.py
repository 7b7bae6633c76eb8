"""Reports: what each stage writes for a person (markdown tables, plots, metrics rows), read from the warehouse alone."""
