"""The streaming merge engine, usable alone: mergekit-format recipes (`recipe`) planned from file
headers (`plan`), executed block by block (`execute`), read and written through `io/`, with one file
per merge method in `methods/`; `cli` is the `exme` command. It imports only exme's shared leaves,
torch, safetensors, yaml and tqdm. Kept free of imports so that `exme merge` starts reading its
inputs before torch loads."""
