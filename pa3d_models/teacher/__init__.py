"""pa3d_models.teacher."""

__all__: list[str] = []
