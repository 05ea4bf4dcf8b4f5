"""Model bundles: manifest schema, writing, loading with SHA-256 checks, cache, downloads, index."""

from .bundle import Bundle, load_bundle, resolve_bundle_path, write_bundle
from .cache import cache_dir, find_installed, installed_bundles, models_dir
from .download import download_bundle, download_file, import_bundle
from .index import find_entry, list_models, load_index
from .manifest import build_manifest, coarse_network, fine_network
from .schema import manifest_schema, validate_manifest
from .verify import sha256_file, verify_files

__all__ = [
    "Bundle",
    "load_bundle",
    "write_bundle",
    "resolve_bundle_path",
    "cache_dir",
    "models_dir",
    "find_installed",
    "installed_bundles",
    "download_bundle",
    "download_file",
    "import_bundle",
    "find_entry",
    "list_models",
    "load_index",
    "build_manifest",
    "coarse_network",
    "fine_network",
    "manifest_schema",
    "validate_manifest",
    "sha256_file",
    "verify_files",
]
