import sys

try:
    from vtdtui.cli import main
except KeyboardInterrupt:  # Ctrl+C while importing: main()'s handler is not there yet
    sys.stderr.write("vtdtui: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(main())
