# shellcheck shell=bash
# Heroku's build output style (heroku-buildpack-python lib/output.sh): a step starts with
# a 6-character arrow, details are indented 7 spaces, warnings and errors start " !     ".

output::step() {
	echo "-----> ${1}"
}

output::info() {
	echo "       ${1}"
}

# Indent a stream (a command's output) as detail lines.
output::indent() {
	sed --unbuffered "s/^/       /"
}

output::warning() {
	local line
	echo >&2
	while IFS= read -r line; do
		echo " !     ${line}" >&2
	done <<<"${1}"
	echo >&2
}

# Print an error and stop the build.
output::error() {
	local line
	echo >&2
	while IFS= read -r line; do
		echo " !     ${line}" >&2
	done <<<"${1}"
	echo >&2
	exit 1
}

# Export the app's config vars from ENV_DIR (one file per variable), except those that
# would break the build itself (Heroku buildpack-api's export_env_dir blacklist).
env::export_dir() {
	local env_dir="${1}" file name
	[[ -d "${env_dir}" ]] || return 0
	for file in "${env_dir}"/*; do
		[[ -f "${file}" ]] || continue
		name="$(basename "${file}")"
		[[ "${name}" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
		[[ "${name}" =~ ^(PATH|GIT_DIR|CPATH|CPPATH|LD_PRELOAD|LIBRARY_PATH|LD_LIBRARY_PATH|PYTHONHOME|PYTHONPATH)$ ]] && continue
		export "${name}=$(<"${file}")"
	done
}
