# Extrapolation Merging (ExMe): fine-tune -> select -> extrapolate -> merge -> evaluate -> report.
# The stages live in workflow/rules/; the logic in the `exme` package (src/exme).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/demo.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/select.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/kinship.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/prefetch.smk"


# Cheap jobs run in the Snakemake process itself, also under `--profile slurm`.
localrules:
    all,
    prefetch,
    preflight,
    write_expo_grid_recipe,
    write_expo_step_recipe,
    write_expo_recipe,
    write_exme_grid_recipe,
    write_exme_recipe,
    write_merge_recipe,
    write_merge_point_recipe,
    write_greedy_pairs,
    write_greedy_recipe,
    select_checkpoints,
    search_alpha,
    search_beta,
    search_merge,
    collect_scores,
    combine_scores,
    report,
    plot_mixup,
    plot_checkpoint_extrapolation,
    plot_kinship,
    compare,


rule all:
    default_target: True
    input:
        final_targets(
            OUT,
            SCOPES,
            TASK_NAMES,
            MIXUP_TRACKS,
            [GREEDY_TRACK] if GREEDY_VARIANTS else [],
            every_checkpoint=bool(EXTRAPOLATED_STEPS),
        ),


# Checked once every rule is defined: a `resources` entry must name one of them.
try:
    check_rule_resources(config["resources"], [rule.name for rule in workflow.rules])
except ExmeError as error:
    raise WorkflowError(f"invalid config: {error}") from None
