# shellcheck shell=bash
# The app's virtual environment lives in the slug at .heroku/python (Heroku's path). It
# is made with --copies and its scripts start with a small sh trampoline instead of an
# absolute #! line, so the same tree works where it was built (BUILD_DIR) and where it
# runs (/app): nothing in it names the build directory, and it has no symlink that
# leaves the slug (the unpacker refuses those).

# The first lines pip and uv give a script, whatever the path:
#   #!/build/dir/.heroku/python/bin/python
# or, for long paths, distlib's
#   #!/bin/sh
#   '''exec' /build/dir/.heroku/python/bin/python "$0" "$@"
#   ' '''
# Both are replaced by the same trampoline, which runs the python beside the script.
venv::relocate() {
	local venv="${1}" file first second skip
	local trampoline
	# The $ signs are for /bin/sh when the script runs, not for this shell.
	# shellcheck disable=SC2016
	trampoline=$'#!/bin/sh\n'"'''exec' \"\$(dirname -- \"\$(realpath -- \"\$0\")\")\"/python \"\$0\" \"\$@\""$'\n'"' '''"
	for file in "${venv}"/bin/*; do
		[[ -f "${file}" && ! -L "${file}" ]] || continue
		[[ "$(head -c 2 "${file}")" == "#!" ]] || continue
		first="$(sed -n 1p "${file}")"
		second="$(sed -n 2p "${file}")"
		if [[ "${first}" == "#!${venv}/bin/python"* ]]; then
			skip=2
		elif [[ "${first}" == "#!/bin/sh" && "${second}" == "'''exec' ${venv}/bin/python"* ]]; then
			skip=4
		else
			continue
		fi
		{
			echo "${trampoline}"
			tail -n "+${skip}" "${file}"
		} >"${file}.relocating"
		chmod --reference="${file}" "${file}.relocating"
		mv "${file}.relocating" "${file}"
	done
	# activate scripts are for people; point them at the run-time path.
	for file in "${venv}"/bin/activate*; do
		[[ -f "${file}" ]] && sed -i "s|${venv}|/app/.heroku/python|g" "${file}"
	done
	# pyvenv.cfg's "command" line records how the venv was made, build path included.
	sed -i '/^command = /d' "${venv}/pyvenv.cfg"
}

# Make a venv with its own copy of the interpreter; python3 and python3.X point at it.
venv::create() {
	local python_exe="${1}" venv="${2}" name
	"${python_exe}" -m venv --copies "${venv}"
	for name in "${venv}"/bin/python3*; do
		[[ -f "${name}" && ! -L "${name}" && "$(basename "${name}")" =~ ^python3(\.[0-9]+)?$ ]] || continue
		rm "${name}"
		ln -s python "${name}"
	done
}
