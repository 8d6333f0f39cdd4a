"""``sere embed`` and ``sere encoders`` end to end, and the features folder they write."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sere_core.cache import EmbeddingCache
from sere_core.cli import main
from sere_core.encoders import get_encoder
from sere_core.features import embed_manifest, load_features
from sere_core.manifests import read_manifest


@pytest.fixture
def clips_folder(audio_factory) -> Path:
    """Two emotion folders of speech-like clips, and one broken file among them."""
    for emotion in ("happy", "sad"):
        for i in range(2):
            audio_factory.write(f"clips/{emotion}/{emotion}{i}.wav", audio_factory.speech_like(1.0 + 0.3 * i))
    audio_factory.write_bytes("clips/sad/broken.wav", b"this is not audio at all")
    return audio_factory.root / "clips"


def _run(args: list[str], cache: Path):
    return CliRunner().invoke(main, args, env={"SERE_CACHE_DIR": str(cache)}, catch_exceptions=False)


def test_embed_folder_writes_features_and_reports_failures(clips_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "features"
    result = _run(["embed", str(clips_folder), "--encoder", "prosody", "--out", str(out)], tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert "embedded 4 clips" in result.output
    assert "broken.wav" in result.output  # the failure summary names the file
    info, clips = load_features(out)
    assert info.name == "prosody" and len(clips) == 4
    assert sorted({c.emotion for c in clips}) == ["happy", "sad"]
    for clip in clips:
        assert clip.frames.shape[1] == info.dim and clip.frames.shape[0] > 50
        assert np.isfinite(clip.frames).all()


def test_second_embedding_is_served_from_the_cache(clips_folder: Path, tmp_path: Path) -> None:
    entries = read_manifest(clips_folder)
    encoder, cache = get_encoder("prosody"), EmbeddingCache(tmp_path / "cache")
    first = embed_manifest(entries, encoder, cache)
    second = embed_manifest(entries, encoder, cache)
    assert first.cache_hits == 0 and second.cache_hits == len(second.clips) == 4
    assert [Path(f.path).name for f in second.failures] == ["broken.wav"]
    for a, b in zip(first.clips, second.clips):
        assert a.clip_id == b.clip_id
        np.testing.assert_allclose(a.frames, b.frames, atol=2e-3 * max(1.0, float(np.abs(a.frames).max())))


def test_embed_fails_when_nothing_could_be_embedded(audio_factory, tmp_path: Path) -> None:
    audio_factory.write_bytes("bad/a.wav", b"nope")
    audio_factory.write("bad/silent.wav", audio_factory.silence(2.0))
    result = _run(["embed", str(audio_factory.root / "bad"), "--encoder", "prosody"], tmp_path / "cache")
    assert result.exit_code != 0
    assert "nothing could be embedded" in result.output
    assert "silent.wav" in result.output


def test_embed_reads_a_csv_inside_a_zip(audio_factory, tmp_path: Path) -> None:
    wav = audio_factory.write("z/one.wav", audio_factory.speech_like(1.2))
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(wav, "audio/one.wav")
        zf.writestr("labels.csv", "path,emotion,language\naudio/one.wav,Angry,de\n")
    out = tmp_path / "f"
    result = _run(["embed", str(archive), "--encoder", "prosody", "--out", str(out)], tmp_path / "cache")
    assert result.exit_code == 0, result.output
    _, clips = load_features(out)
    assert [(c.emotion, c.language) for c in clips] == [("angry", "de")]


def test_unknown_encoder_is_a_clear_error(clips_folder: Path, tmp_path: Path) -> None:
    result = _run(["embed", str(clips_folder), "--encoder", "nonsense"], tmp_path / "cache")
    assert result.exit_code != 0 and "nonsense" in result.output


def test_encoders_lists_the_offline_default_as_available(tmp_path: Path) -> None:
    result = _run(["encoders"], tmp_path / "cache")
    assert result.exit_code == 0
    lines = {line.split()[1]: line.split()[0] for line in result.output.splitlines() if line.strip()}
    assert lines["whisper-base"] == "yes" and lines["prosody"] == "yes"


@pytest.mark.corpus
def test_whisper_base_embeds_real_speech_with_the_cli(corpora_dir: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader((corpora_dir / "emodb" / "manifest.csv").open()))[:3]
    manifest = tmp_path / "m.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "emotion", "language", "speaker"])
        for row in rows:
            writer.writerow([corpora_dir / "emodb" / row["path"], row["emotion"], row["language"], row["speaker"]])
    # absolute paths outside the CSV's folder are refused: the manifest must sit beside its audio
    result = _run(["embed", str(manifest), "--out", str(tmp_path / "f")], tmp_path / "cache")
    assert result.exit_code != 0
    local = tmp_path / "local"
    local.mkdir()
    lines = ["path,emotion,language,speaker"]
    for i, row in enumerate(rows):
        (local / f"{i}.flac").write_bytes((corpora_dir / "emodb" / row["path"]).read_bytes())
        lines.append(f"{i}.flac,{row['emotion']},{row['language']},{row['speaker']}")
    (local / "m.csv").write_text("\n".join(lines) + "\n")
    result = _run(["embed", str(local / "m.csv"), "--out", str(tmp_path / "f")], tmp_path / "cache")
    assert result.exit_code == 0, result.output
    info, clips = load_features(tmp_path / "f")
    assert info.name == "whisper-base" and info.dim == 2048 and len(clips) == 3
    assert all(abs(c.frames.shape[0] / c.duration_s - 50) < 3 for c in clips)
