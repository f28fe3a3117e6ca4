"""Named, explicit transforms of a `PartSample`: normalisation, axis conventions and augmentations.

Every transform is called as `t(sample, generator=None) -> PartSample`; random ones draw from `generator`
(a seeded CPU `torch.Generator`, or the global generator when None). None of them reorders or drops points,
so labels, label masks and per-point meta stay aligned; rotations and axis changes also turn the normals.
The model never permutes axes: a dataset's axis convention is one of these transforms, chosen by the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .sample import PartSample

__all__ = [
    "normalize_unit_sphere",
    "normalize_box",
    "swap_yz",
    "euler_rotation_matrix",
    "up_axis_matrix",
    "Transform",
    "Compose",
    "RandomApply",
    "NormalizeUnitSphere",
    "NormalizeBox",
    "SwapYZ",
    "AxisPermutation",
    "Find3DAxes",
    "UpAxis",
    "RandomRotation",
    "RandomScale",
    "RandomTranslate",
    "RandomJitter",
    "official_augmentation",
    "random_rotation_matrix",
    "axis_rotation_matrix",
    "RandomSO3Rotation",
    "RandomAxisRotation",
    "real_mesh_augmentation",
    "AUGMENTATIONS",
    "build_augmentation",
]


def normalize_unit_sphere(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre on the mean and divide by the largest distance to it (the ShapeNetPart evaluation's rule).

    Returns:
        `(points, center, scale)`: normalised points and the `(3,)` centre and 0-dim scale used
        (`original = points * scale + center`).

    Examples:
        >>> p, c, s = normalize_unit_sphere(torch.tensor([[0.0, 0, 0], [2, 0, 0]]))
        >>> p.tolist(), c.tolist(), float(s)
        ([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [1.0, 0.0, 0.0], 1.0)
    """
    center = points.mean(dim=0)
    scale = (points - center).norm(dim=1).max().clamp_min(1e-12)
    return (points - center) / scale, center, scale


def normalize_box(points: torch.Tensor, half_extent: float = 0.75) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centre the bounding box and scale so that the largest `|coordinate|` is `half_extent` (Find3D's mesh
    normalisation, 0.75).

    Returns:
        `(points, center, scale)` with `original = points * scale + center`.
    """
    lo, hi = points.min(dim=0).values, points.max(dim=0).values
    center = (lo + hi) / 2
    scale = (points - center).abs().max().clamp_min(1e-12) / half_extent
    return (points - center) / scale, center, scale


def swap_yz(points: torch.Tensor) -> torch.Tensor:
    """`(x, y, z) -> (x, z, y)` on the last axis: the official release's axis change (a reflection).

    Examples:
        >>> swap_yz(torch.tensor([[1.0, 2.0, 3.0]])).tolist()
        [[1.0, 3.0, 2.0]]
    """
    return points[..., [0, 2, 1]]


def euler_rotation_matrix(angles: torch.Tensor) -> torch.Tensor:
    """`(3, 3)` rotation `Rz @ Ry @ Rx` from Euler angles `(ax, ay, az)` in radians (the official
    augmentation's and Find3D's convention)."""
    ax, ay, az = (angles[i].to(torch.float64) for i in range(3))
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)

    def mat(rows: list[list[torch.Tensor]]) -> torch.Tensor:
        return torch.stack([torch.stack(r) for r in rows])

    rx = mat([[one, zero, zero], [zero, ax.cos(), -ax.sin()], [zero, ax.sin(), ax.cos()]])
    ry = mat([[ay.cos(), zero, ay.sin()], [zero, one, zero], [-ay.sin(), zero, ay.cos()]])
    rz = mat([[az.cos(), -az.sin(), zero], [az.sin(), az.cos(), zero], [zero, zero, one]])
    return rz @ ry @ rx


_AXES = {"x": 0, "y": 1, "z": 2}


def _axis_vector(axis: str) -> torch.Tensor:
    sign = -1.0 if axis.startswith("-") else 1.0
    name = axis.lstrip("+-").lower()
    if name not in _AXES:
        raise ValueError(f"axis must be one of x, y, z with an optional sign, got {axis!r}")
    v = torch.zeros(3, dtype=torch.float64)
    v[_AXES[name]] = sign
    return v


def up_axis_matrix(src: str = "y", dst: str = "z") -> torch.Tensor:
    """`(3, 3)` proper rotation (det +1) taking the `src` axis onto `dst` (e.g. Y-up data to Z-up).

    Examples:
        >>> (up_axis_matrix("y", "z") @ torch.tensor([0.0, 1, 0], dtype=torch.float64)).tolist()
        [0.0, 0.0, 1.0]
    """
    a, b = _axis_vector(src), _axis_vector(dst)
    if torch.equal(a, b):
        return torch.eye(3, dtype=torch.float64)
    if torch.equal(a, -b):  # half turn about a perpendicular axis
        k = _axis_vector("x" if a[0] == 0 else "z")
        return 2 * torch.outer(k, k) - torch.eye(3, dtype=torch.float64)
    k = torch.linalg.cross(a, b)
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + kx + kx @ kx  # Rodrigues, 90 degrees


def _apply_matrix(sample: PartSample, matrix: torch.Tensor) -> PartSample:
    m = matrix.to(sample.points.dtype)
    normals = None if sample.normals is None else sample.normals @ m.T
    return sample.replace(points=sample.points @ m.T, normals=normals)


class Transform:
    """Base of the transforms: `t(sample, generator=None) -> PartSample`; `repr` shows the settings."""

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        raise NotImplementedError  # pragma: no cover

    def _settings(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._settings()})"


class Compose(Transform):
    """Apply transforms in order, passing the same generator along.

    Examples:
        >>> s = PartSample(torch.rand(8, 3), torch.zeros(8, dtype=torch.long), ["a"], "x", "0")
        >>> t = Compose([NormalizeUnitSphere(), SwapYZ()])
        >>> round(float(t(s).points.norm(dim=1).max()), 4)
        1.0
    """

    def __init__(self, transforms: Sequence[Callable[..., PartSample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        for t in self.transforms:
            sample = t(sample, generator=generator)
        return sample


class RandomApply(Transform):
    """Apply `transform` with probability `p` (the official augmentation uses 0.9)."""

    def __init__(self, transform: Callable[..., PartSample], p: float = 0.9):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.transform, self.p = transform, p

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        if float(torch.rand((), generator=generator)) < self.p:
            return self.transform(sample, generator=generator)
        return sample


class NormalizeUnitSphere(Transform):
    """Centre on the mean, scale to the unit sphere (`normalize_unit_sphere`); records `meta["center"]` and
    `meta["scale"]`."""

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        points, center, scale = normalize_unit_sphere(sample.points)
        return sample.replace(points=points, meta={**sample.meta, "center": center, "scale": scale})


class NormalizeBox(Transform):
    """Centre the bounding box, scale to `max |coordinate| = half_extent` (`normalize_box`)."""

    def __init__(self, half_extent: float = 0.75):
        if half_extent <= 0:
            raise ValueError(f"half_extent must be > 0, got {half_extent}")
        self.half_extent = half_extent

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        points, center, scale = normalize_box(sample.points, self.half_extent)
        return sample.replace(points=points, meta={**sample.meta, "center": center, "scale": scale})


class AxisPermutation(Transform):
    """New axis `i` = `signs[i] * old axis order[i]`: `AxisPermutation((0, 2, 1))` is `SwapYZ`.

    Args:
        order: a permutation of (0, 1, 2).
        signs: +1 or -1 per new axis.
    """

    def __init__(self, order: Sequence[int] = (0, 1, 2), signs: Sequence[float] = (1, 1, 1)):
        if sorted(order) != [0, 1, 2] or len(signs) != 3 or any(abs(s) != 1 for s in signs):
            raise ValueError(f"order must permute (0, 1, 2) and signs be three +-1, got {order}, {signs}")
        self.order, self.signs = tuple(int(o) for o in order), tuple(float(s) for s in signs)

    @property
    def matrix(self) -> torch.Tensor:
        """The `(3, 3)` matrix of the change (`new = matrix @ old`)."""
        m = torch.zeros(3, 3, dtype=torch.float64)
        for i, (o, s) in enumerate(zip(self.order, self.signs)):
            m[i, o] = s
        return m

    @property
    def is_rotation(self) -> bool:
        """True for a proper rotation (det +1), False for a reflection."""
        return bool(torch.linalg.det(self.matrix) > 0)

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return _apply_matrix(sample, self.matrix)


class SwapYZ(AxisPermutation):
    """The official PatchAlign3D axis change `(x, y, z) -> (x, z, y)`, applied in its training, evaluation and
    demo. A reflection, not a rotation.

    Examples:
        >>> s = PartSample(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]), ["a"], "x", "0")
        >>> SwapYZ()(s).points.tolist(), SwapYZ().is_rotation
        ([[1.0, 3.0, 2.0]], False)
    """

    def __init__(self) -> None:
        super().__init__((0, 2, 1), (1, 1, 1))

    def __repr__(self) -> str:
        return "SwapYZ()"


class Find3DAxes(AxisPermutation):
    """Find3D's axis change `(x, y, z) -> (-x, z, y)`, a proper rotation."""

    def __init__(self) -> None:
        super().__init__((0, 2, 1), (-1, 1, 1))

    def __repr__(self) -> str:
        return "Find3DAxes()"


class UpAxis(Transform):
    """Rotate data whose up axis is `src` so that it points along `dst` (`up_axis_matrix`; a proper rotation).

    Examples:
        >>> s = PartSample(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([0]), ["a"], "x", "0")
        >>> UpAxis("y", "z")(s).points.tolist()
        [[0.0, 0.0, 1.0]]
    """

    def __init__(self, src: str = "y", dst: str = "z"):
        self.src, self.dst = src, dst
        self._matrix = up_axis_matrix(src, dst)

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return _apply_matrix(sample, self._matrix)


def _uniform(low: torch.Tensor | float, high: torch.Tensor | float, shape: tuple[int, ...],
             generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    return low + (torch.as_tensor(high, dtype=torch.float64) - low) * u


class RandomRotation(Transform):
    """Rotate by Euler angles drawn uniformly in `[-max_degrees, max_degrees]` per axis, `R = Rz Ry Rx`
    (the official augmentation: 20 degrees). `max_degrees` may be one number or one per axis (x, y, z);
    `(0, 180, 0)` spins about the Y axis only."""

    def __init__(self, max_degrees: float | Sequence[float] = 20.0):
        limits = [float(max_degrees)] * 3 if isinstance(max_degrees, int | float) else [float(d) for d in max_degrees]
        if len(limits) != 3 or any(d < 0 for d in limits):
            raise ValueError(f"max_degrees must be >= 0, one value or three, got {max_degrees!r}")
        self.max_degrees = limits[0] if len(set(limits)) == 1 else tuple(limits)
        self._limits = torch.tensor(limits, dtype=torch.float64) * math.pi / 180

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        angles = _uniform(-self._limits, self._limits, (3,), generator)
        return _apply_matrix(sample, euler_rotation_matrix(angles))


class RandomScale(Transform):
    """Scale isotropically by a factor uniform in `[low, high]` (official: 0.9 to 1.1)."""

    def __init__(self, low: float = 0.9, high: float = 1.1):
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
        self.low, self.high = low, high

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        factor = float(_uniform(self.low, self.high, (), generator))
        return sample.replace(points=sample.points * factor)


class RandomTranslate(Transform):
    """Shift by an offset uniform in `[-max_offset, max_offset]` per axis (official: 0.02)."""

    def __init__(self, max_offset: float = 0.02):
        if max_offset < 0:
            raise ValueError(f"max_offset must be >= 0, got {max_offset}")
        self.max_offset = max_offset

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        offset = _uniform(-self.max_offset, self.max_offset, (3,), generator).to(sample.points.dtype)
        return sample.replace(points=sample.points + offset)


class RandomJitter(Transform):
    """Add per-point Gaussian noise `N(0, sigma)` clipped to `[-clip, clip]` (official: 0.01, 0.05)."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05):
        if sigma < 0 or clip < 0:
            raise ValueError(f"sigma and clip must be >= 0, got sigma={sigma}, clip={clip}")
        self.sigma, self.clip = sigma, clip

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        noise = torch.randn(sample.points.shape, generator=generator) * self.sigma
        return sample.replace(points=sample.points + noise.clamp(-self.clip, self.clip).to(sample.points.dtype))


def official_augmentation(p: float = 0.9) -> RandomApply:
    """The official release's augmentation (off by default there): with probability `p`, rotate (+-20 degrees
    per axis), scale (0.9-1.1), translate (+-0.02) and jitter (sigma 0.01, clip 0.05). Applied per shape here
    (per batch in the official code)."""
    return RandomApply(Compose([RandomRotation(20.0), RandomScale(0.9, 1.1), RandomTranslate(0.02),
                                RandomJitter(0.01, 0.05)]), p=p)


def random_rotation_matrix(generator: torch.Generator | None = None) -> torch.Tensor:
    """`(3, 3)` float64 rotation drawn uniformly (Haar measure) over SO(3): a uniformly random unit quaternion
    (four Gaussians, normalised) turned into a matrix.

    Examples:
        >>> r = random_rotation_matrix(torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(r @ r.T, torch.eye(3, dtype=torch.float64))), round(float(torch.linalg.det(r)), 6)
        (True, 1.0)
    """
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    w, x, y, z = q / q.norm().clamp_min(1e-12)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ])


def axis_rotation_matrix(axis: str, angle: float | torch.Tensor) -> torch.Tensor:
    """`(3, 3)` float64 rotation by `angle` radians about `axis` (`"x"`, `"y"` or `"z"`, right-handed).

    Examples:
        >>> v = axis_rotation_matrix("z", torch.pi / 2) @ torch.tensor([1.0, 0, 0], dtype=torch.float64)
        >>> [round(float(c), 6) for c in v]
        [0.0, 1.0, 0.0]
    """
    name = axis.lower()
    if name not in _AXES:
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    a = torch.as_tensor(angle, dtype=torch.float64)
    c, s = a.cos(), a.sin()
    i, j = (_AXES[name] + 1) % 3, (_AXES[name] + 2) % 3  # the plane in right-handed (cyclic) order
    m = torch.eye(3, dtype=torch.float64)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


class RandomSO3Rotation(Transform):
    """Rotate by a rotation drawn uniformly over SO(3) (`random_rotation_matrix`): for datasets whose shapes
    are not aligned (L-PSB's up axis varies between shapes of one category), and to make a model independent
    of the pose it is given. Normals turn with the points.

    Examples:
        >>> s = PartSample(torch.rand(16, 3), torch.zeros(16, dtype=torch.long), ["a"], "x", "0")
        >>> out = RandomSO3Rotation()(s, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(out.points.norm(dim=1), s.points.norm(dim=1), atol=1e-6))
        True
    """

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        return _apply_matrix(sample, random_rotation_matrix(generator))


class RandomAxisRotation(Transform):
    """Rotate about one axis (the up axis of aligned data) by an angle uniform in `[-max_degrees, max_degrees]`
    (180: any heading).

    Args:
        axis: `"x"`, `"y"` or `"z"`.
        max_degrees: largest angle, in `[0, 180]`.

    Examples:
        >>> s = PartSample(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([0]), ["a"], "x", "0")
        >>> RandomAxisRotation("z")(s, generator=torch.Generator().manual_seed(0)).points[0, 2].item()
        3.0
    """

    def __init__(self, axis: str = "z", max_degrees: float = 180.0):
        if axis.lower() not in _AXES:
            raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
        if not 0 <= max_degrees <= 180:
            raise ValueError(f"max_degrees must be in [0, 180], got {max_degrees}")
        self.axis, self.max_degrees = axis.lower(), float(max_degrees)

    def __call__(self, sample: PartSample, generator: torch.Generator | None = None) -> PartSample:
        limit = self.max_degrees * math.pi / 180
        angle = _uniform(-limit, limit, (), generator)
        return _apply_matrix(sample, axis_rotation_matrix(self.axis, angle))


def real_mesh_augmentation(
    rotation: str = "so3",
    *,
    up: str = "z",
    scale: tuple[float, float] = (0.8, 1.2),
    jitter: float = 0.01,
    clip: float = 0.03,
) -> Compose:
    """Augmentation for real meshes, applied to every training shape (after normalisation): a rotation, an
    isotropic scale and clipped per-point jitter.

    Args:
        rotation: `"so3"` (uniform over all rotations: shapes not aligned, the default), `"up"` (any heading
            about `up`: aligned data) or `"none"`.
        up: the up axis for `rotation="up"`.
        scale: range of the isotropic scale factor.
        jitter: sigma of the per-point Gaussian noise (unit-sphere units).
        clip: the noise is clipped to `[-clip, clip]`.

    Examples:
        >>> real_mesh_augmentation("up", up="y")
        Compose(transforms=[RandomAxisRotation(axis='y', max_degrees=180.0), RandomScale(low=0.8, high=1.2), \
RandomJitter(sigma=0.01, clip=0.03)])
    """
    rotations = {"so3": [RandomSO3Rotation()], "up": [RandomAxisRotation(up, 180.0)], "none": []}
    if rotation not in rotations:
        raise ValueError(f"rotation must be one of {sorted(rotations)}, got {rotation!r}")
    return Compose([*rotations[rotation], RandomScale(*scale), RandomJitter(jitter, clip)])


#: Named training augmentations (`build_augmentation`); `"real"` is the default for real meshes.
AUGMENTATIONS: dict[str, Callable[[], Transform]] = {
    "none": lambda: Compose([]),
    "official": official_augmentation,
    "real": real_mesh_augmentation,
    "real_up": lambda: real_mesh_augmentation("up"),
    "so3": lambda: Compose([RandomSO3Rotation()]),
}


def build_augmentation(name: str | bool | None) -> Transform | None:
    """A training augmentation by name (`AUGMENTATIONS`); `True` means `"official"` (the recipe's historical
    `--augment`), `False`/`None`/`"none"` give None.

    Examples:
        >>> build_augmentation("real").transforms[0]
        RandomSO3Rotation()
        >>> build_augmentation(False) is None
        True
    """
    if name is None or name is False or name == "none":
        return None
    if name is True:
        name = "official"
    if not isinstance(name, str) or name not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {sorted(AUGMENTATIONS)} (or a bool), got {name!r}")
    return AUGMENTATIONS[name]()
