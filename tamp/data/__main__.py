"""`python -m tamp.data convert-avinstruct`: calibration files from published releases.

convert-avinstruct --annotations avqa_data1.json avqa_data2.json --video-dir MUSIC-AVQA/videos
    --output data/AVInstruct/avinstruct_avqa_music.json
  the MUSIC-AVQA records of the AVInstruct annotations as the LLaVA-style JSON the `avinstruct`
  calibration preset reads (tamp.data.avinstruct); one summary line, exit 2 and one error line on
  bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tamp.core.io import first_line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tamp.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    av = commands.add_parser("convert-avinstruct", help="AVInstruct + MUSIC-AVQA videos -> LLaVA-style JSON")
    av.add_argument("--annotations", nargs="+", required=True, metavar="JSON",
                    help="the released AVInstruct files, in order (avqa_data1.json avqa_data2.json)")
    av.add_argument("--video-dir", required=True, help="MUSIC-AVQA's video folder (<video_id>.mp4)")
    av.add_argument("--output", required=True, help="the calibration JSON to write")
    av.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    from tamp.data.avinstruct import convert

    try:
        done = convert(args.annotations, args.video_dir, args.output, overwrite=args.overwrite)
    except (OSError, ValueError) as err:
        print(f"tamp.data: error: {first_line(err)}", file=sys.stderr)
        return 2
    print(f"wrote {done.output}: {done.kept} records with a MUSIC-AVQA video "
          f"({done.missing_video} of {done.read} AVInstruct records have none in {args.video_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
