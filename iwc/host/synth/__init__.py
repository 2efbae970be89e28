"""A synthetic iWildCam 2020 competition, in the exact real layout and formats (`iwc demo-data`).

`write_demo(out, seed, scale)` writes, under `out/`:
- `iwildcam-2020-fgvc7/`: `train/<id>.jpg`, `test/<id>.jpg` originals (640x480, 600x400 or 640x360),
  the train annotations, the test information, the MegaDetector results (train and test in one file)
  and `sample_submission.csv`;
- `iwildcam2020-256/256_images/{train,test}/images/<id>.jpg`: the same images squashed to 256x256;
- `ground_truth/test_labels.csv` (`Id,Category`): the true test labels, read only by evaluation;
- `ground_truth/data_issues.json`: what was planted, as the data issues a run must report (reason -> ids).

It is a miniature of the real problem: camera locations with their own backgrounds (test locations
disjoint from train), sparse category ids, about a third of the frames empty, small animals whose species
shows in shape and coat pattern (visible in a crop, hard to see in a 64 px full frame), grayscale night
frames, bursts of frames moving through the scene, noisy MegaDetector boxes (misses, false boxes, person
boxes for humans) and the real defects: train images listed but missing, truncated train JPEGs that the
resized dataset lacks, test images left out of the sample submission. Same seed => byte-identical files.

`quirks=True` plants the rest of what real files hold (see `quirks.plant_quirks`): boxes a hair past the frame
and detections that are no box, images without a MegaDetector entry, sample Ids without a test image, single-
channel grayscale night frames, and truncated, zero-byte and missing JPEGs in train and test. The quirks
draw from their own random stream, so a quirks demo is the plain demo of the same seed plus the quirks.

By concern: `world` (sizes, species, locations, the plan of every frame), `render` (pixels), `detector` (the
simulated MegaDetector), `quirks` (planted defects), `write` (files, `write_demo`, `DemoInfo`), `folders`.
"""

from iwc.host.synth.write import DemoInfo, demo_root, write_demo

__all__ = ["DemoInfo", "demo_root", "write_demo"]
