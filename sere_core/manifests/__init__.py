"""What to process: CSV manifests, folders and zip archives turned into ``ManifestEntry`` rows.

>>> from sere_core.manifests import ManifestEntry
>>> ManifestEntry(path="/data/a.wav", emotion=" Happy ").emotion
'happy'
"""

from sere_core.manifests.archive import ArchiveLimits, extract_zip
from sere_core.manifests.entry import MANIFEST_COLUMNS, ManifestEntry, normalize_emotion
from sere_core.manifests.reader import read_csv, read_folder, read_manifest, read_zip

__all__ = [
    "MANIFEST_COLUMNS",
    "ArchiveLimits",
    "ManifestEntry",
    "extract_zip",
    "normalize_emotion",
    "read_csv",
    "read_folder",
    "read_manifest",
    "read_zip",
]
