"""Serve a generated camera-trap dataset the way LILA's blob stores do, with fault injection.

Tests and the offline demo use this instead of lila.science: a real HTTP/1.1 server on
127.0.0.1 with the LILA index CSV, a COCO Camera Traps metadata zip and JPEGs under the
same relative paths on three cloud prefixes (/gcp, /aws, /azure).
"""

from __future__ import annotations

import argparse
import base64
import collections
import csv
import hashlib
import io
import json
import shutil
import sys
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from standins.http import Handler, Standin, corrupted, serve_until_signalled

INDEX_NAME = "lila_camera_trap_datasets.csv"
REGISTRY_NAME = "_datasets.json"
CLOUDS = ("gcp", "aws", "azure")
METADATA_VERSION = "1.14"
INDEX_COLUMNS = (
    "name,short_name,continent,country,region,image_base_url_relative,metadata_url_relative,"
    "bbox_url_relative,image_base_url_gcp,image_base_url_aws,image_base_url_azure,"
    "metadata_url_gcp,metadata_url_aws,metadata_url_azure,bbox_url_gcp,bbox_url_aws,"
    "bbox_url_azure,mdv5a_results_raw,mdv5b_results_raw,md1000-redwood_results_raw,"
    "md_results_with_rde"
).split(",")

# (common name, latin name); id 0 is always "empty", as COCO Camera Traps reserves it.
DEFAULT_CLASSES = (
    ("empty", "empty"),
    ("mule deer", "odocoileus hemionus"),
    ("cougar", "puma concolor"),
    ("wild turkey", "meleagris gallopavo"),
    ("california quail", "callipepla californica"),
    ("american black bear", "ursus americanus"),
    ("vehicle", "vehicle"),
    ("domestic cow", "bos taurus"),
)
# latin name -> (family, ord, class), so the categories carry NACTI's taxonomy fields.
TAXONOMY = {
    "odocoileus hemionus": ("cervidae", "artiodactyla", "mammalia"),
    "puma concolor": ("felidae", "carnivora", "mammalia"),
    "meleagris gallopavo": ("phasianidae", "galliformes", "aves"),
    "callipepla californica": ("odontophoridae", "galliformes", "aves"),
    "ursus americanus": ("ursidae", "carnivora", "mammalia"),
    "bos taurus": ("bovidae", "artiodactyla", "mammalia"),
}
# Not a generated dataset: proves clients pick their row by name, not by position.
EXTRA_ROW = {
    "name": "Caltech Camera Traps",
    "short_name": "cct",
    "continent": "North America",
    "country": "USA",
    "region": "California",
    "image_base_url_relative": "caltech-unzipped/cct_images",
    "metadata_url_relative": "caltechcameratraps/labels/caltech_camera_traps.json.zip",
    "bbox_url_relative": "caltechcameratraps/labels/caltech_bboxes_20200316.json",
    "image_base_url_gcp": "https://storage.googleapis.com/public-datasets-lila/caltech-unzipped/cct_images",
    "image_base_url_aws": "http://us-west-2.opendata.source.coop.s3.amazonaws.com/agentmorris/lila-wildlife/caltech-unzipped/cct_images",
    "image_base_url_azure": "https://lilawildlife.blob.core.windows.net/lila-wildlife/caltech-unzipped/cct_images",
    "metadata_url_gcp": "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/labels/caltech_camera_traps.json.zip",
    "metadata_url_aws": "http://us-west-2.opendata.source.coop.s3.amazonaws.com/agentmorris/lila-wildlife/caltechcameratraps/labels/caltech_camera_traps.json.zip",
    "metadata_url_azure": "https://lilawildlife.blob.core.windows.net/lila-wildlife/caltechcameratraps/labels/caltech_camera_traps.json.zip",
    "bbox_url_gcp": "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/labels/caltech_bboxes_20200316.json",
    "bbox_url_aws": "http://us-west-2.opendata.source.coop.s3.amazonaws.com/agentmorris/lila-wildlife/caltechcameratraps/labels/caltech_bboxes_20200316.json",
    "bbox_url_azure": "https://lilawildlife.blob.core.windows.net/lila-wildlife/caltechcameratraps/labels/caltech_bboxes_20200316.json",
    "mdv5a_results_raw": "https://lila.science/public/lila-md-results/caltech-camera-traps_mdv5a.0.0_results.json.zip",
    "mdv5b_results_raw": "https://lila.science/public/lila-md-results/caltech-camera-traps_mdv5b.0.0_results.json.zip",
}  # fmt: skip
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".zip": "application/zip",
    ".csv": "text/csv",
    ".json": "application/json",
}
IMAGES_PER_SUB = 5
SUBS_PER_PART = 4


# ---------------------------------------------------------------------------------------------
# Dataset generation


def _categories(classes) -> list[dict]:
    """Build NACTI-style categories with "empty" as id 0."""
    pairs = [(str(c), str(n).lower()) for c, n in (classes or DEFAULT_CLASSES)]
    if pairs[0][0] != "empty":
        pairs.insert(0, ("empty", "empty"))
    cats = []
    for cid, (common, latin) in enumerate(pairs):
        words = latin.split()
        genus, species = (words[0], " ".join(words[1:])) if len(words) > 1 else ("", "")
        family, order, klass = TAXONOMY.get(latin, ("", "", ""))
        cats.append(
            {
                "id": cid,
                "name": latin,
                "species": species,
                "genus": genus,
                "family": family,
                "ord": order,
                "class": klass,
                "common name": common,
            }
        )
    return cats


def _location(sub: int, day: datetime) -> tuple[str, str, bool]:
    """Return (location, file-name prefix, has_seq) for a subfolder, in two NACTI styles."""
    if sub % 2 == 0:
        loc = f"Unit{150 + 7 * sub}_Ivan{97 + sub:03d}"
        return loc, f"{day.year}_{loc}", False
    loc = f"FL-{sub:02d}"
    return loc, f"{loc}_{day:%m_%d_%Y}_{loc}", True


def _smooth_noise(rng: np.random.Generator, width: int, height: int, cell: int) -> np.ndarray:
    """Return unit-ish noise with features about `cell` pixels wide."""
    small = rng.standard_normal((height // cell + 2, width // cell + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def _render_jpeg(rng, width, height, night, draw_box, shape) -> bytes:
    """Render a camera-trap-like JPEG with a darker animal inside `draw_box` (x, y, w, h)."""
    yy = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    horizon = rng.uniform(0.25, 0.5)
    ground_w = np.clip((yy - horizon) / 0.1 + 0.5, 0.0, 1.0)
    sky = np.array([150, 180, 215], np.float32) * rng.uniform(0.85, 1.1)
    ground = np.array([95, 100, 58], np.float32) * rng.uniform(0.7, 1.2, 3).astype(np.float32)
    img = sky * (1 - ground_w) + ground * ground_w
    img = img + 22 * _smooth_noise(rng, width, height, 64)[..., None]
    veg = _smooth_noise(rng, width, height, 6)[..., None] * ground_w
    img = img + veg * np.array([11, 16, 6], np.float32)
    img = img + rng.normal(0.0, 2.5, (height, width, 3)).astype(np.float32)
    if draw_box is not None:
        bx, by, bw, bh = draw_box
        xs = np.arange(width, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        if shape == "rect":
            inside = (xs >= bx) & (xs < bx + bw) & (ys >= by) & (ys < by + bh)
            mask = inside.astype(np.float32)
        else:
            r2 = ((xs - bx - bw / 2) / (bw / 2)) ** 2 + ((ys - by - bh / 2) / (bh / 2)) ** 2
            mask = np.clip((1.0 - r2) * 6.0, 0.0, 1.0)
        fur = (
            np.array([72, 58, 42], np.float32)
            + 10 * _smooth_noise(rng, width, height, 4)[..., None]
        )
        img = img * (1 - mask[..., None]) + (img * 0.25 + fur * 0.4) * mask[..., None]
    if night:
        # IR night shots: grey, dark, grainy, vignetted.
        gray = img.mean(axis=2) * 0.6
        ux = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
        uy = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
        gray = gray * (1 - 0.35 * (ux**2 + uy**2)) + rng.normal(0.0, 2.5, gray.shape).astype(
            np.float32
        )
        img = np.repeat(gray[..., None], 3, axis=2)
    img[-max(1, height // 24) :] = 12  # the black info strip camera traps burn in
    arr = np.clip(img, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=85, subsampling=2, optimize=False)
    return buf.getvalue()


def _assign_labels(rng, n_images: int, n_classes: int) -> list[int]:
    """Draw one category per image: ~12% empty, then geometrically rarer classes."""
    weights = np.array([0.0] + [0.55**k for k in range(n_classes - 1)])
    probs = weights / weights.sum() * 0.88
    probs[0] = 0.12
    labels = list(rng.choice(n_classes, size=n_images, p=probs))
    if n_images >= n_classes:
        labels[:n_classes] = range(n_classes)  # small demos still show every class once
    return [int(v) for v in rng.permutation(labels)]


def _box(rng, width: int, height: int) -> list[float]:
    """Draw an animal box in the lower part of the frame."""
    bw = width * rng.uniform(0.15, 0.4)
    bh = height * rng.uniform(0.15, 0.4)
    bx = rng.uniform(0, width - bw)
    by = rng.uniform(height * 0.3, height - bh - height / 24)
    return [bx, by, bw, bh]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _zip_bytes(member: str, data: bytes) -> bytes:
    """Zip one member with fixed metadata so the archive bytes are reproducible."""
    info = zipfile.ZipInfo(member, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(info, data, compresslevel=6)
    return buf.getvalue()


def _register(root: Path, entry: dict) -> None:
    """Add or replace this slug's entry in root/_datasets.json."""
    path = root / REGISTRY_NAME
    entries = json.loads(path.read_text()) if path.exists() else []
    slugs = [e.get("slug") for e in entries]
    if entry["slug"] in slugs:
        entries[slugs.index(entry["slug"])] = entry
    else:
        entries.append(entry)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)


def generate_dataset(
    root: Path,
    *,
    name: str = "NACTI-demo",
    slug: str = "nacti",
    n_images: int = 60,
    seed: int = 0,
    classes=None,
    pretty: bool = True,
    box_fraction: float = 0.3,
    sizes=((640, 480), (800, 600)),
) -> dict:
    """Write a deterministic NACTI-like dataset under root and return its summary.

    `classes` is a sequence of (common name, latin name); "empty" is prepended as id 0 if
    missing. `class_counts` in the summary counts annotations (multi-label images count twice).
    """
    root = Path(root)
    args = {
        "name": name,
        "slug": slug,
        "n_images": n_images,
        "seed": seed,
        "classes": [list(c) for c in classes] if classes else None,
        "pretty": pretty,
        "box_fraction": box_fraction,
        "sizes": [list(s) for s in sizes],
    }
    image_base = f"{slug}-unzipped"
    member = f"{slug}_metadata.{METADATA_VERSION}.json"
    metadata_rel = f"{slug}/{member}.zip"
    # A re-run with other args must not leave stale images the metadata no longer lists.
    for stale in (root / image_base, root / slug):
        shutil.rmtree(stale, ignore_errors=True)

    rng = np.random.default_rng(seed)
    cats = _categories(classes)
    labels = _assign_labels(rng, n_images, len(cats))
    nonempty = [i for i, c in enumerate(labels) if c != 0]
    n_boxed = min(len(nonempty), round(box_fraction * len(nonempty)))
    boxed = sorted(int(i) for i in rng.choice(nonempty, size=n_boxed, replace=False))
    box_rank = {i: k for k, i in enumerate(boxed)}
    n_multi = (n_images + 10) // 20  # ~5% of images, at least one from 10 images on
    multi = set(
        int(i) for i in rng.choice(nonempty, size=min(n_multi, len(nonempty)), replace=False)
    )

    images, annotations, files = [], [], {}
    counts = collections.Counter()
    total_bytes = 0
    for i in range(n_images):
        sub = i // IMAGES_PER_SUB
        day = datetime(2010 + sub % 3, 5, 4) + timedelta(days=sub * 3)
        location, prefix, has_seq = _location(sub, day)
        width, height = (int(v) for v in sizes[sub % len(sizes)])
        stem = f"{prefix}_img{i:04d}" if not has_seq else f"{prefix}_{40000 + 17 * i:07d}"
        file_name = f"part{sub // SUBS_PER_PART}/sub{sub:03d}/{stem}.jpg"
        when = day + timedelta(seconds=int(rng.integers(0, 86400)))
        night = when.hour < 6 or when.hour >= 20
        cid = labels[i]
        draw_box = _box(rng, width, height) if cid else None
        ann_box = None
        if i in box_rank:
            k = box_rank[i]
            bx, by, bw, bh = draw_box
            # A few deliberately dirty boxes give the cleaning stage something to do.
            if k % 10 == 1:
                bx, by = width - bw * 0.6, height - bh * 0.7
            elif k % 10 == 3:
                bx, by = -bw * 0.3, by - bh * 0.2
            draw_box = [bx, by, bw, bh]
            ann_box = [round(v, 2) for v in draw_box]
            if k == 2:
                ann_box[2] = 0.5
        shape = "rect" if cats[cid]["name"] == "vehicle" else "ellipse"
        data = _render_jpeg(rng, width, height, night, draw_box, shape)
        rel = f"{image_base}/{file_name}"
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        files[rel] = _sha256(data)
        total_bytes += len(data)

        image = {
            "id": file_name[: -len(".jpg")],
            "file_name": file_name,
            "width": width,
            "height": height,
            "location": location,
            "datetime": when.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if has_seq:
            image["seq_id"] = f"{location}_seq{i // 3:05d}"
        images.append(image)
        ann = {"id": f"ann_{i:06d}_0", "image_id": image["id"], "category_id": cid}
        if ann_box is not None:
            ann["bbox"] = ann_box
        annotations.append(ann)
        counts[cid] += 1
        if i in multi and len(cats) > 2:
            other = 1 + (cid % (len(cats) - 1))  # any other non-empty class
            annotations.append(
                {"id": f"ann_{i:06d}_1", "image_id": image["id"], "category_id": other}
            )
            counts[other] += 1

    meta = {
        "images": images,
        "info": {
            "version": METADATA_VERSION,
            "description": f"{name}: generated stand-in for NACTI (seed {seed})",
            "year": 2023,
            "contributor": "standins.lila",
            "date_created": "2023-10-01",
        },
        "categories": cats,
        "annotations": annotations,
    }
    if pretty:
        text = json.dumps(meta, indent=1)
    else:
        text = json.dumps(meta, separators=(",", ":"))
    zdata = _zip_bytes(member, text.encode())
    (root / slug).mkdir(parents=True, exist_ok=True)
    (root / metadata_rel).write_bytes(zdata)
    files[metadata_rel] = _sha256(zdata)

    summary = {
        "name": name,
        "slug": slug,
        "metadata_path": metadata_rel,
        "image_base_relative": image_base,
        "n_images": n_images,
        "class_counts": {c["common name"]: counts[c["id"]] for c in cats},
        "bytes": total_bytes,
        "files": files,
    }
    _register(root, {**summary, "args": args})
    return summary


def is_generated(root: Path, **kwargs) -> bool:
    """Return True if root holds this slug generated with these args and all its files."""
    root = Path(root)
    expected = generate_dataset.__kwdefaults__ | kwargs
    expected["classes"] = [list(c) for c in expected["classes"]] if expected["classes"] else None
    expected["sizes"] = [list(s) for s in expected["sizes"]]
    try:
        entries = json.loads((root / REGISTRY_NAME).read_text())
    except (OSError, ValueError):
        return False
    for entry in entries:
        if entry.get("slug") == expected["slug"] and entry.get("args") == expected:
            return all((root / rel).is_file() for rel in entry["files"])
    return False


# ---------------------------------------------------------------------------------------------
# Server


class _LilaHandler(Handler):
    server_version = "lila-standin/1.0"

    def route(self, path: str, query: str, head: bool) -> None:
        standin: LilaStandin = self.server.standin
        first, _, rest = path.lstrip("/").partition("/")
        if path == "/" + INDEX_NAME:
            rel, cloud = INDEX_NAME, None
        elif first in CLOUDS:
            rel, cloud = rest, first
            if not standin.authorized(query):
                return self.simple(403, b"AuthenticationFailed\n", head)
        else:
            return self.simple(404, b"not found", head)
        fault = standin.faults.take(rel)
        if self.pre_fault(fault, head):
            return None
        if cloud is None:
            data, ctype = standin.index_csv().encode(), "text/csv"
        else:
            fp = standin.resolve(rel)
            if fp is None:
                return self.simple(404, b"not found", head)
            data = fp.read_bytes()
            ctype = CONTENT_TYPES.get(fp.suffix.lower(), "application/octet-stream")
        data = corrupted(data) if fault and fault[0] == "corrupt" else data
        md5 = hashlib.md5(data)  # of the bytes served: corrupt at the source, HTTP-consistent
        extra = [("ETag", f'"{md5.hexdigest()}"')]
        if cloud == "gcp":
            extra.append(("x-goog-hash", "md5=" + base64.b64encode(md5.digest()).decode()))
        return self.serve(data, ctype, head, fault, extra)


class LilaStandin(Standin):
    """Local HTTP stand-in for LILA's index CSV and GCP/AWS/Azure blob stores.

    `metadata_base` / `images_base` make the index point at other servers (other origins),
    the way the real index points at storage.googleapis.com and friends.
    """

    handler = _LilaHandler
    name = "lila-standin"

    def __init__(
        self,
        root: Path,
        *,
        host="127.0.0.1",
        port=0,
        datasets=None,
        token=None,
        metadata_base: str | None = None,
        images_base: str | None = None,
        tls=None,
    ):
        super().__init__(host=host, port=port, tls=tls)
        self.root = Path(root).resolve()
        self.datasets = datasets
        self.token = token
        self.metadata_base = metadata_base or self.url
        self.images_base = images_base or self.url
        self.index_url = f"{self.url}/{INDEX_NAME}"

    def authorized(self, query: str) -> bool:
        """Tell whether a blob request carries the SAS token (when one is required)."""
        if self.token is None:
            return True
        have = set(parse_qsl(query, keep_blank_values=True))
        return set(parse_qsl(self.token, keep_blank_values=True)) <= have

    def resolve(self, rel: str) -> Path | None:
        """Map a cloud-relative path to a file under root, or None."""
        parts = rel.split("/")
        if not rel or "\\" in rel or any(p in ("", ".", "..") for p in parts):
            return None
        fp = (self.root / rel).resolve()
        if not fp.is_relative_to(self.root) or not fp.is_file():
            return None
        return fp

    def _datasets(self) -> list[dict]:
        if self.datasets is not None:
            return list(self.datasets)
        try:
            return json.loads((self.root / REGISTRY_NAME).read_text())
        except (OSError, ValueError):
            return []

    def index_csv(self) -> str:
        """Render the LILA datasets index with this server's URLs (never the token)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for ds in self._datasets():
            base, meta = ds["image_base_relative"], ds["metadata_path"]
            row = {
                "name": ds["name"],
                "short_name": ds["slug"],
                "continent": "North America",
                "country": "USA",
                "region": "",
                "image_base_url_relative": base,
                "metadata_url_relative": meta,
                "bbox_url_relative": "",
            }
            for cloud in CLOUDS:
                row[f"image_base_url_{cloud}"] = f"{self.images_base}/{cloud}/{base}"
                row[f"metadata_url_{cloud}"] = f"{self.metadata_base}/{cloud}/{meta}"
            writer.writerow(row)
        writer.writerow(EXTRA_ROW)
        return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    """Run the stand-in from the command line."""
    parser = argparse.ArgumentParser(prog="python -m standins.lila", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="generate (optionally) and serve a dataset")
    serve.add_argument("--root", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--generate", type=int, metavar="N", help="generate N images first")
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--token", help="require this SAS-style query string on blob requests")
    args = parser.parse_args(argv)

    args.root.mkdir(parents=True, exist_ok=True)
    if args.generate is not None:
        gen = {"n_images": args.generate, "seed": args.seed}
        if not is_generated(args.root, **gen):
            generate_dataset(args.root, **gen)
    server = LilaStandin(args.root, host=args.host, port=args.port, token=args.token)
    serve_until_signalled(server, f"LILA stand-in serving {server.index_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
