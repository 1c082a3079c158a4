"""Rewrite the compact KubeRay schemas beside this file from KubeRay's CustomResourceDefinitions.

tests/test_cluster.py validates cluster/kuberay/*.yaml against the `v1` openAPIV3Schema of each CRD. The
CRD YAMLs are 0.9 and 1.4 MB; the schema alone as gzip-compressed JSON is about 10 KB, so that is what
the repository keeps. Take the CRDs from ray-project/kuberay, helm-chart/kuberay-operator/crds/:

    python tests/data/kuberay/regenerate.py path/to/crds/ray.io_rayclusters.yaml path/to/crds/ray.io_rayjobs.yaml

Each ray.io_<kind>.yaml becomes ray.io_<kind>.v1.json.gz here.
"""

import argparse
import gzip
import json
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
VERSION = "v1"  # the served and stored version, the one the manifests use


def compact_schema(crd_yaml: Path) -> bytes:
    crd = yaml.safe_load(crd_yaml.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == VERSION]
    schema = json.dumps(version["schema"]["openAPIV3Schema"], sort_keys=True, separators=(",", ":"))
    return gzip.compress(schema.encode(), compresslevel=9, mtime=0)  # mtime=0: same input, same bytes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", nargs="+", type=Path, help="KubeRay CRD YAML files (ray.io_*.yaml)")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .json.gz files")
    args = parser.parse_args(argv)
    for crd_yaml in args.crds:
        out = args.out / f"{crd_yaml.stem}.{VERSION}.json.gz"
        out.write_bytes(compact_schema(crd_yaml))
        print(f"{crd_yaml} -> {out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
