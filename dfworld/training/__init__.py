"""Training: the loop every stage runs on, the stages (stages/, one file each), the pipeline and the sweep."""
