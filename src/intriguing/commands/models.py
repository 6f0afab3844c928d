"""``intriguing models``: every name a ``--model`` accepts, and how to bring your own."""

from __future__ import annotations

import click

from intriguing.models import catalogue


@click.command("models")
def command() -> None:
    """List the built-in architectures and the zoo's models, and the other ways to name a model."""
    rows = catalogue()
    width = max(len(name) for name, _, _ in rows)
    for kind, heading in (("architecture", "Built-in architectures (seeded random weights, or --weights)"),
                          ("zoo", "Zoo (trained on MNIST on first use and cached; --weights loads yours)")):
        click.echo(f"{heading}:")
        for name, row_kind, description in rows:
            if row_kind == kind:
                click.echo(f"  {name:<{width}}  {description}")
    click.echo("Your own: path/to/file.py:factory or package.module:factory (factory() returns the nn.Module; "
               "INPUT_SHAPE = (C, H, W) in its module, or --size), with --weights (.safetensors, or a .pt/.pth "
               "state dict), --mean/--std and --classes.")
