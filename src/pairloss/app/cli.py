"""The ``pairloss`` command: ``list``, ``demo``, ``train CONFIG``, ``reproduce NAME`` (also ``python -m pairloss``).

Bad options (an unknown loss or recipe, an ``--out`` that is a file or cannot be written) are reported as usage
errors, naming the option, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

import pairloss

app = typer.Typer(help="pairloss: pairwise losses, their metrics, and one-command paper reproductions.")
console = Console()

#: Below this terminal width ``pairloss list`` prints one block per loss instead of a four-column table.
TABLE_WIDTH = 140


def _show_version(value: bool) -> None:
    if value:
        console.print(f"pairloss {pairloss.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """pairloss: pairwise losses, their metrics, and one-command paper reproductions."""


def _checked_folder(path: Path, option: str = "--out") -> Path:
    from pairloss.app.output import output_folder

    try:
        return output_folder(path)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint=option) from None


def _checked_loss(name: str) -> str:
    from pairloss.app.demo import demo_loss_name

    try:
        return demo_loss_name(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--loss") from None


@app.command("list")
def list_losses() -> None:
    """Every loss with its one-line formula and its paper."""
    from pairloss.losses.base import registered_losses

    losses = registered_losses()
    if console.width < TABLE_WIDTH:  # a table would squeeze the formulas into slivers: one block per loss
        for name, cls in losses.items():
            console.print(f"[bold]{name}[/bold]  [dim]{cls.family}[/dim]")
            console.print(Padding(Text(cls.formula, overflow="fold"), (0, 0, 0, 4)))
            console.print(Padding(Text(cls.paper, style="italic", overflow="fold"), (0, 0, 0, 4)))
        return
    table = Table(title="pairloss losses")
    table.add_column("family", no_wrap=True)
    table.add_column("loss", style="bold", no_wrap=True, min_width=max(len(name) for name in losses))
    table.add_column("formula", overflow="fold")
    table.add_column("paper", overflow="fold")
    for name, cls in losses.items():
        table.add_row(cls.family, name, escape(cls.formula), escape(cls.paper))
    console.print(table)


@app.command()
def demo(
    loss: Annotated[
        list[str] | None,
        typer.Option(
            help="Loss to train with (repeatable), by demo name or class name, e.g. rs@k or "
            "RecallAtKSurrogateLoss; default: contrastive and rs@k."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per loss (the spread of the metrics).")] = 3,
    updates: Annotated[int, typer.Option(min=1, help="Optimiser updates per training run.")] = 200,
    speed_batch: Annotated[int, typer.Option(min=8, help="Batch of the speed and memory comparison.")] = 4096,
    out: Annotated[Path, typer.Option(help="Output folder; results go to OUT/demo/.")] = Path("results"),
) -> None:
    """Open-set glyph retrieval with a small CNN, then the losses' speed and memory beside naive N×N code."""
    from pairloss.app.demo import DEFAULT_LOSSES, run_demo

    losses = [_checked_loss(name) for name in loss or DEFAULT_LOSSES]
    _checked_folder(out / "demo")
    run_demo(losses=losses, seeds=seeds, updates=updates, speed_batch=speed_batch, out=out, console=console)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    config: Annotated[str | None, typer.Argument(help="A shipped config (see --list) or a YAML file.")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides in dotted form, e.g. train.epochs=2 out=runs/x.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped configs and exit.")] = False,
) -> None:
    """Train on a benchmark from a config: writes OUT/config.yaml, metrics.json, last.ckpt and TensorBoard scalars.

    Rerunning the same command resumes from OUT/last.ckpt. Under `torchrun --nproc-per-node N` the global batch
    spans the processes.
    """
    from pairloss.training.config import list_configs, load_config

    if list_:
        table = Table(title="pairloss train configs")
        table.add_column("config", style="bold")
        table.add_column("setting")
        table.add_column("paper")
        for info in list_configs():
            table.add_row(info.name, escape(info.description), escape(info.paper))
        console.print(table)
        return
    if config is None:
        raise typer.BadParameter("give a CONFIG (see --list)")
    from pairloss.app.progress import RichReporter
    from pairloss.training.experiment import run_experiment

    try:
        resolved = load_config(config, overrides or [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    _checked_folder(Path(resolved.out), "out=")  # before any data is loaded
    try:
        result = run_experiment(resolved, reporter=RichReporter())
    except ValueError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(1) from error
    console.print(f"wrote {result.out}/config.yaml, metrics.json, last.ckpt, tensorboard/")


@app.command()
def reproduce(
    name: Annotated[str | None, typer.Argument(help="Recipe name (see --list).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="A small, fast version of the recipe.")] = False,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Number of seeds (default: the recipe's; 5 for a full protocol run).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output folder; results go to OUT/NAME/.")] = Path("results"),
    list_: Annotated[bool, typer.Option("--list", help="List the recipes and exit.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Run every recipe.")] = False,
    publish: Annotated[
        bool, typer.Option("--publish", help="Copy the finished full run into docs/results and regenerate the docs.")
    ] = False,
    render_docs: Annotated[
        bool, typer.Option("--render-docs", help="Regenerate the docs tables from docs/results and exit.")
    ] = False,
) -> None:
    """Reproduce a paper's headline claim: writes OUT/NAME/results.json, table.md and figure.png."""
    from pairloss.app.progress import RichReporter
    from pairloss.recipes import all_recipes, get_recipe, run_experiment
    from pairloss.recipes import render as docs

    if render_docs:
        for path in docs.render_docs("."):
            console.print(f"wrote {path}")
        return
    recipes = all_recipes()
    if list_:
        table = Table(title="recipes")
        table.add_column("name", style="bold")
        table.add_column("paper")
        table.add_column("claim tested")
        for recipe in recipes.values():
            table.add_row(recipe.name, escape(recipe.paper), escape(recipe.claim))
        console.print(table)
        return
    if all_:
        names = list(recipes)
    elif name is None:
        raise typer.BadParameter("give a recipe NAME, --all, --list or --render-docs")
    else:
        try:
            names = [get_recipe(name).name]
        except ValueError as error:
            raise typer.BadParameter(str(error), param_hint="NAME") from error
    for recipe_name in names:
        _checked_folder(out / recipe_name)
    reporter = RichReporter(console=console)
    for recipe_name in names:
        try:
            result = run_experiment(recipes[recipe_name], out=out, seeds=seeds, quick=quick, reporter=reporter)
        except ValueError as error:
            raise typer.BadParameter(str(error)) from error
        console.rule(f"{recipe_name}: {recipes[recipe_name].title}")
        console.print(result.table_path.read_text())
        console.print(f"wrote {result.results_path}, {result.table_path}, {result.figure_path}")
        if publish:
            try:
                changed = docs.publish(result.out_dir, ".")
            except ValueError as error:
                raise typer.BadParameter(str(error)) from error
            for path in changed:
                console.print(f"wrote {path}")


if __name__ == "__main__":
    app()
