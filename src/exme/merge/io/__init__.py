"""Model files: the safetensors tensor reader, the streaming shard writer and the output folder's
other files."""
