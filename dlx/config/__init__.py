"""Config composition (Hydra compose API), the typed schema, and where configs live."""

from dlx.config.compose import compose, group_options, split_recipe
from dlx.config.paths import find_recipes, recipe_description

__all__ = ["compose", "find_recipes", "group_options", "recipe_description", "split_recipe"]
