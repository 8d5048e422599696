"""The ``pairloss`` command: ``list``, ``demo``, ``reproduce NAME``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="pairloss: pairwise losses, their metrics, and one-command paper reproductions.")
console = Console()


@app.command("list")
def list_losses() -> None:
    """Every loss with its one-line formula and its paper."""
    from pairloss.losses.base import registered_losses

    table = Table(title="pairloss losses")
    table.add_column("family")
    table.add_column("loss", style="bold")
    table.add_column("formula")
    table.add_column("paper")
    for name, cls in registered_losses().items():
        table.add_row(cls.family, name, escape(cls.formula), escape(cls.paper))
    console.print(table)


@app.command()
def demo(
    loss: Annotated[
        list[str] | None, typer.Option(help="Loss to train with (repeatable); default: three standard losses.")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs per loss.")] = 10,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("results"),
) -> None:
    """Open-set retrieval on the bundled digits: train on classes 0–4, retrieve classes 5–9."""
    from pairloss.app.demo import DEFAULT_LOSSES, run_demo

    run_demo(losses=loss or list(DEFAULT_LOSSES), epochs=epochs, seed=seed, out=out, console=console)


@app.command()
def train(
    loss: Annotated[str, typer.Option(help="Loss to train with (one of the demo losses).")] = "contrastive",
    epochs: Annotated[int, typer.Option(min=1, help="Training epochs.")] = 10,
    batch_size: Annotated[int, typer.Option(min=2, help="Global batch size (all processes together).")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Train on digits 0–4 and evaluate on 5–9; under `torchrun --nproc-per-node N` the batch spans the processes."""
    from pairloss.app.launch import train_digits

    result = train_digits(loss=loss, epochs=epochs, batch_size=batch_size, seed=seed)
    if result.metrics:
        console.print({name: round(value, 4) for name, value in result.metrics.items()})
        console.print(f"trained on {result.world_size} process(es)")


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
    from pairloss.recipes import all_recipes, get_recipe, run_recipe
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
            raise typer.BadParameter(str(error)) from error
    reporter = RichReporter(console=console)
    for recipe_name in names:
        try:
            result = run_recipe(recipes[recipe_name], out=out, seeds=seeds, quick=quick, reporter=reporter)
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
