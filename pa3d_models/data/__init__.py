"""pa3d_models.data."""

__all__: list[str] = []
