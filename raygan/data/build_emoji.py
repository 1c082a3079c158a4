"""Rebuild the shipped `emoji` dataset from the npm tarball of emoji-datasource-google.

    npm pack emoji-datasource-google@16.0.0
    python -m raygan.data.build_emoji emoji-datasource-google-16.0.0.tgz

Writes raygan/data/emoji/emoji64.npy.xz (3,786 x 64 x 64 x 4 uint8 RGBA, xz-compressed, fully
transparent pixels zeroed so they compress) and emoji64.json (per image: file, category, identity,
held-out flag). Labels come from the package's emoji.json: its 9 categories other than `Component`;
a skin-tone variant takes its base emoji's category and identity, and the 5 `Component` images (the
skin-tone swatches) count as `People & Body`. The held-out split `emoji:test` is a fixed stratified
20% by category. The images are Noto Color Emoji, Apache-2.0 (see NOTICE beside the files).
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import tarfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "emoji"
IMAGE_DIR = "package/img/google/64/"
COMPONENT_CATEGORY = "People & Body"  # the Component images are skin-tone swatches
TEST_FRACTION = 0.2


def read_tarball(path: Path) -> tuple[dict[str, bytes], list[dict]]:
    """(PNG bytes by file name, the emoji.json records) from the npm tarball."""
    pngs, records = {}, None
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.startswith(IMAGE_DIR) and member.name.endswith(".png"):
                pngs[member.name[len(IMAGE_DIR) :]] = tar.extractfile(member).read()
            elif member.name == "package/emoji.json":
                records = json.load(tar.extractfile(member))
    if records is None or not pngs:
        raise SystemExit(f"{path}: not an emoji-datasource-google tarball (no emoji.json or {IMAGE_DIR})")
    return pngs, records


def label_images(records: list[dict]) -> list[tuple[str, str, int]]:
    """(file, category, identity) for every image; skin-tone variants share their base's identity."""
    out = []
    for identity, record in enumerate(sorted(records, key=lambda r: r["sort_order"])):
        category = COMPONENT_CATEGORY if record["category"] == "Component" else record["category"]
        out.append((record["image"], category, identity))
        for variation in (record.get("skin_variations") or {}).values():
            out.append((variation["image"], category, identity))
    return out


def main(argv=None) -> None:
    from PIL import Image
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tarball", type=Path, help="emoji-datasource-google-16.0.0.tgz from `npm pack`")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.time()
    pngs, records = read_tarball(args.tarball)
    labelled = [item for item in label_images(records) if item[0] in pngs]
    missing = len(pngs) - len(labelled)
    if missing:
        raise SystemExit(f"{missing} images in the tarball have no record in emoji.json")
    images = np.stack([np.asarray(Image.open(io.BytesIO(pngs[file])).convert("RGBA")) for file, _, _ in labelled])
    images[images[..., 3] == 0] = 0  # invisible colours carry nothing and cost space
    categories = sorted({category for _, category, _ in labelled})
    category_ids = np.array([categories.index(category) for _, category, _ in labelled])
    _, test_index = train_test_split(
        np.arange(len(labelled)), test_size=TEST_FRACTION, random_state=0, stratify=category_ids
    )
    is_test = np.zeros(len(labelled), dtype=bool)
    is_test[test_index] = True
    args.out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, images)
    (args.out / "emoji64.npy.xz").write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    index = {
        "source": args.tarball.name,
        "categories": categories,
        "file": [file for file, _, _ in labelled],
        "category": category_ids.tolist(),
        "identity": [identity for _, _, identity in labelled],
        "test": is_test.astype(int).tolist(),
    }
    (args.out / "emoji64.json").write_text(json.dumps(index, separators=(",", ":")) + "\n")
    counts = np.bincount(category_ids, minlength=len(categories))
    print(
        f"{len(labelled)} images ({is_test.sum()} held out), {len(set(index['identity']))} identities, "
        f"{len(categories)} categories: " + ", ".join(f"{c} {n}" for c, n in zip(categories, counts))
    )
    print(f"wrote {args.out} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
