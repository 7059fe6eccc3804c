"""`tracking.compare --across-image-sizes`: one model at two image sizes on the same source
test images is one section and one paired verdict; without the flag, two sections."""

from __future__ import annotations

from pathlib import Path

from tracking import compare
from tracking.config import Config
from tracking.training.loop import train

TINY = dict(model="concat_cnn", dataset="digits", epochs=1, batch_size=32, limit=200,
            checkpoint_every=0, experiment="sizes")


def test_two_image_sizes_pair_only_when_asked(mlflow_uri: str, tmp_path: Path, capsys) -> None:
    for size in (32, 40):
        train(Config(**TINY, image_size=size, run_name=f"size-{size}"))
    capsys.readouterr()

    assert compare.main(["--experiment", "sizes", "--no-log", "--no-latency", "--output",
                         str(tmp_path / "apart")]) == 0
    apart = capsys.readouterr().out
    assert "## digits-32px" in apart and "## digits-40px" in apart
    assert "concat_cnn (40px)" not in apart  # the size is the section's, not the model's

    assert compare.main(["--experiment", "sizes", "--no-log", "--no-latency", "--output",
                         str(tmp_path / "pooled"), "--across-image-sizes"]) == 0
    pooled = capsys.readouterr().out
    assert "## digits\n" in pooled and "px\n" not in pooled.split("## digits\n")[0]
    # one row per size, and a paired verdict on the 40 shared test images
    assert "concat_cnn (batch 32, 32px) [limit 200" in pooled
    assert "concat_cnn (batch 32, 40px) [limit 200" in pooled
    verdict = next(line for line in pooled.splitlines()
                   if line.startswith("| concat_cnn (") and "McNemar" in line)
    assert "1 + 1, 40 |" in verdict, verdict
