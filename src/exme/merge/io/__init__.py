"""Model files: what makes a folder a model (model_folder), reading its tensors (reader, direct_io,
lora), model references (model_ids, references) and the streaming shard writer (shard_writer).
Imports nothing of the merge engine above it: the engine writes the output folder's other files
(merge/output_folder.py)."""
