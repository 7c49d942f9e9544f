# shellcheck shell=bash
# Which Python the app asks for, and which the stack can give.
# Heroku's precedence (lib/python_version.sh): runtime.txt, then .python-version, then the
# default. Heroku downloads any supported version; here the stack's interpreters are the
# only ones, so a request the stack cannot meet stops the build and names what it has.

# Print "<version> <origin>" for the requested version, or "" if none is requested.
python_version::requested() {
	local build_dir="${1}" content versions
	if [[ -f "${build_dir}/runtime.txt" ]]; then
		content="$(tr -d '[:space:]' <"${build_dir}/runtime.txt")"
		if [[ "${content}" =~ ^python-([0-9]+\.[0-9]+(\.[0-9]+)?)$ ]]; then
			echo "${BASH_REMATCH[1]} runtime.txt"
			return 0
		fi
		output::error "Invalid Python version in runtime.txt: '${content}'.
It must be 'python-X.Y' or 'python-X.Y.Z', for example 'python-3.13'.
runtime.txt is deprecated; prefer a .python-version file containing '3.13'."
	fi
	for name in .python_version python-version.txt python_version.txt .python-version.txt; do
		if [[ -e "${build_dir}/${name}" ]]; then
			output::error "Found a misspelled Python version file: ${name}
Rename it to .python-version to have it honored."
		fi
	done
	if [[ -f "${build_dir}/.python-version" ]]; then
		versions="$(sed -e 's/#.*//' -e 's/[[:space:]]//g' "${build_dir}/.python-version" | grep -v '^$' || true)"
		if [[ -z "${versions}" ]]; then
			output::error "The .python-version file is empty.
Write the Python version in it, for example '3.13'."
		fi
		if [[ "$(wc -l <<<"${versions}")" -gt 1 ]]; then
			output::error "The .python-version file names more than one version: ${versions//$'\n'/, }.
Keep only one, for example '3.13'."
		fi
		if [[ ! "${versions}" =~ ^([0-9]+\.[0-9]+(\.[0-9]+)?)$ ]]; then
			output::error "Invalid Python version in .python-version: '${versions}'.
It must be 'X.Y' or 'X.Y.Z', for example '3.13'."
		fi
		echo "${versions} .python-version"
		return 0
	fi
	echo ""
}

# The X.Y of every python3.N on PATH, newest first, one a line.
python_version::available() {
	local dir exe
	local -A seen=()
	IFS=: read -ra dirs <<<"${PATH}"
	for dir in "${dirs[@]}"; do
		for exe in "${dir}"/python3.[0-9]*; do
			[[ -x "${exe}" && "$(basename "${exe}")" =~ ^python(3\.[0-9]+)$ ]] || continue
			seen["${BASH_REMATCH[1]}"]=1
		done
	done
	if [[ ${#seen[@]} -eq 0 ]]; then
		return 0
	fi
	printf '%s\n' "${!seen[@]}" | sort -t. -k1,1nr -k2,2nr
}

# The stack, other than this build's, whose python3 is X.Y ($1), or "" if none is. The
# build pipeline lists every stack's Python in DYNOD_STACK_PYTHONS ("debian-13=3.13
# debian-14=3.14"): a build runs inside one stack and cannot look at the others.
python_version::stack_with() {
	local entry name
	for entry in ${DYNOD_STACK_PYTHONS:-}; do
		name="${entry%%=*}"
		if [[ "${entry#*=}" == "${1}" && "${name}" != "${STACK:-}" ]]; then
			echo "${name}"
			return 0
		fi
	done
	echo ""
}

# ": debian-12 has Python 3.11, ..." for every stack in DYNOD_STACK_PYTHONS, or "".
python_version::stacks_list() {
	local entry list=""
	for entry in ${DYNOD_STACK_PYTHONS:-}; do
		list+="${list:+, }${entry%%=*} has Python ${entry#*=}"
	done
	[[ -z "${list}" ]] || echo " (${list})"
}

# The full X.Y.Z of an interpreter.
python_version::of() {
	"${1}" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
}
