"""The lm-eval settings a run may set for all tasks and per task. Imports nothing heavy: the
pipeline's config check reads them while Snakemake builds the DAG."""

# Each an argument of simple_evaluate and a flag of the `lm_eval` CLI.
LM_EVAL_SETTINGS = (
    "num_fewshot",
    "apply_chat_template",
    "fewshot_as_multiturn",
    "system_instruction",
    "gen_kwargs",
    "confirm_run_unsafe_code",
)
