"""The build pipeline: source in, buildpacks on a stack, slug out."""
