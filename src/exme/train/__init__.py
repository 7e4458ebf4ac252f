"""Fine-tuning: supervised fine-tuning that saves a series of checkpoints. Takes plain arguments
(paths and numbers), never the pipeline's config."""
