"""Refresh the README's screenshots: copy what the browser tests saved in tests/e2e/artifacts/
(one per page, plus a task's way) into docs/screenshots/, as palette PNGs to keep the repository
small. Run after the browser tests: `make screenshots` does both."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE / "artifacts"
DOCS = HERE.parents[1] / "docs" / "screenshots"


def shrink(source: Path, target: Path) -> None:
    """256 colours without dithering: a UI screenshot stays crisp at about a third of the bytes."""
    with Image.open(source) as image:
        palette = image.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        palette.save(target, optimize=True)


def main() -> int:
    pages = sorted((ARTIFACTS / "pages").glob("*.png"))
    flow = sorted((ARTIFACTS / "flow").glob("*.png"))
    if not pages:
        print(
            f"no page screenshots in {ARTIFACTS / 'pages'}: run the browser tests first "
            "(`make e2e`, or `make screenshots` for both)",
            file=sys.stderr,
        )
        return 2
    DOCS.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in pages + flow}
    for stale in DOCS.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
            print(f"removed {stale.relative_to(DOCS.parents[1])} (no such page any more)")
    for source in pages + flow:
        target = DOCS / source.name
        shrink(source, target)
        print(f"{target.relative_to(DOCS.parents[1])}  {target.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
