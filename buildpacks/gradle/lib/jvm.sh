# shellcheck shell=bash
# The JDK for the JVM buildpacks (java, gradle, scala, clojure), copied per buildpack:
# the stack's OpenJDKs (Debian's openjdk-N-jdk-headless in /usr/lib/jvm), chosen by
# system.properties' java.runtime.version the way Heroku's jvm-common reads it, and the
# .profile.d script that gives a dyno JAVA_HOME and Heroku's JAVA_OPTS for its size.

# The value of KEY in a Java properties file (KEY=VALUE or KEY: VALUE lines), or "".
jvm::property() {
	local file="${1}" key="${2}"
	[[ -f "${file}" ]] || return 0
	sed -n -E "s/^[[:space:]]*${key//./\\.}[[:space:]]*[=:][[:space:]]*([^[:space:]]*).*$/\\1/p" "${file}" |
		tail -n1 | tr -d '\r'
}

# The feature releases the stack has, one a line, newest last ("21").
jvm::available_majors() {
	local home
	for home in /usr/lib/jvm/java-*-openjdk-*; do
		[[ "${home}" =~ /java-[0-9]+-openjdk- && -x "${home}/bin/javac" ]] || continue
		home="${home##*/java-}"
		echo "${home%%-*}"
	done | sort -n -u
}

# Pick the JDK for system.properties' java.runtime.version, export JAVA_HOME and PATH,
# or stop the build naming what the stack has. Heroku's semantics: "17", "1.8" (8),
# "17.0.9" and a distribution prefix ("zulu-17", "heroku-21") all select a major version;
# an unset version gets the stack's default JDK. A Debian stack carries one build of
# each feature release it ships (its current security update), so an exact update
# ("21.0.2") gets the stack's build of that feature release, with a warning.
jvm::install() {
	local build_dir="${1}" requested major available default home
	requested="$(jvm::property "${build_dir}/system.properties" java.runtime.version)"
	available="$(jvm::available_majors | paste -sd ' ' | sed 's/ /, /g')"
	if [[ -z "${available}" ]]; then
		output::error "The ${STACK:-current} stack has no JDK (Debian's default-jdk-headless).
Use a stack that has one (dynoctl stacks lists them; dynoctl stacks:set NAME)."
	fi
	default="$(readlink -f "$(command -v javac 2>/dev/null || echo /usr/bin/javac)")"
	default="${default%/bin/javac}"
	if [[ -z "${requested}" ]]; then
		home="${default}"
		major="$(jvm::major_of_home "${home}")"
	else
		major="${requested#*-}"  # zulu-17, heroku-21, openjdk-21
		major="${major#1.}"      # 1.8 is 8
		major="${major%%[.+_u]*}"  # 17.0.9, 8u392
		if [[ ! "${major}" =~ ^[0-9]+$ ]]; then
			output::error "system.properties asks for java.runtime.version=${requested}, which is not a Java version.
Set java.runtime.version to one the ${STACK:-current} stack has: ${available}."
		fi
		home="$(find /usr/lib/jvm -maxdepth 1 -name "java-${major}-openjdk-*" -type d | head -n1)"
		if [[ -z "${home}" || ! -x "${home}/bin/javac" ]]; then
			output::error "system.properties asks for java.runtime.version=${requested}, but the ${STACK:-current} stack has OpenJDK ${available} only (Debian's packages), and this platform does not download JDKs.
Set java.runtime.version=${available##*, } in system.properties (code built for an older Java runs on a newer JDK), or move the app to a stack that has OpenJDK ${major} (dynoctl stacks lists them; dynoctl stacks:set NAME)."
		fi
	fi
	export JAVA_HOME="${home}"
	export PATH="${JAVA_HOME}/bin:${PATH}"
	local version
	version="$(sed -n 's/^JAVA_VERSION="\(.*\)"$/\1/p' "${JAVA_HOME}/release" 2>/dev/null || true)"
	local asked="${requested}"
	[[ -n "${asked}" ]] || asked="unset, the stack's default"
	output::step "Using the stack's OpenJDK ${version:-${major}} (system.properties java.runtime.version: ${asked})"
	if [[ -n "${requested}" && "${requested}" != "${major}" && "${requested}" != "1.${major}" ]]; then
		output::warning "java.runtime.version=${requested} names more than a feature release: this stack has one build of OpenJDK ${major} (Debian's current update, ${version:-unknown}), which the app gets."
	fi
	if [[ -z "${requested}" ]]; then
		output::info "Pin it with java.runtime.version=${major} in system.properties; this stack has OpenJDK ${available}."
	fi
	export JVM_MAJOR="${major}"
}

jvm::major_of_home() {
	local name="${1##*/java-}"
	echo "${name%%-*}"
}

# .profile.d/jvm.sh: JAVA_HOME and PATH for the chosen JDK, and JAVA_OPTS with the heap
# Heroku gives each dyno size (jvm-common's defaults: 512 MB and less -Xmx300m -Xss512k,
# 1 GB -Xmx671m, 2.5 GB -Xmx2g, 14 GB -Xmx12g, more: 80 % of it), read from the dyno's
# cgroup when it starts. A JAVA_OPTS config var with its own -Xmx wins.
jvm::write_profile() {
	local build_dir="${1}" buildpack="${2}"
	mkdir -p "${build_dir}/.profile.d"
	{
		echo "# Written by the ${buildpack} buildpack: the stack's JDK and Heroku's JAVA_OPTS for the dyno's memory."
		echo "export JAVA_HOME=\"${JAVA_HOME}\""
		cat <<'SH'
export PATH="${HOME}/bin:${JAVA_HOME}/bin:${PATH}"
jvm_memory_bytes() {
	# The dyno's own cgroup: its path in /proc/self/cgroup under /sys/fs/cgroup ("/" in
	# the cgroup namespace dynod gives every dyno, the full path without one).
	# cgroup v2: memory.high is the size's RAM (dynod's quota, R14); v1 has only the kill
	# limit, twice the quota (R15) as on Heroku.
	local line path value
	while IFS= read -r line; do
		case "${line}" in
		0::*)
			path="/sys/fs/cgroup${line#0::}"
			value="$(cat "${path}/memory.high" 2>/dev/null)"
			case "${value}" in
			'' | *[!0-9]*) ;;
			*) echo "${value}"; return ;;
			esac
			value="$(cat "${path}/memory.max" 2>/dev/null)"
			case "${value}" in
			'' | *[!0-9]*) ;;
			*) echo $((value / 2)); return ;;
			esac
			;;
		*:memory:*)
			value="$(cat "/sys/fs/cgroup/memory${line#*:memory:}/memory.limit_in_bytes" 2>/dev/null)"
			case "${value}" in
			'' | *[!0-9]*) ;;
			*) if [ "${value}" -lt $((1 << 50)) ]; then echo $((value / 2)); return; fi ;;
			esac
			;;
		esac
	done </proc/self/cgroup
	echo $((512 * 1024 * 1024))
}
jvm_heap_opts() {
	local mb=$(($(jvm_memory_bytes) / 1024 / 1024))
	if [ "${mb}" -le 512 ]; then
		echo "-Xmx300m -Xss512k -XX:CICompilerCount=2"
	elif [ "${mb}" -le 1024 ]; then
		echo "-Xmx671m -XX:CICompilerCount=2"
	elif [ "${mb}" -le 2560 ]; then
		echo "-Xmx2g"
	elif [ "${mb}" -le 14336 ]; then
		echo "-Xmx12g"
	else
		echo "-XX:MaxRAMPercentage=80.0"
	fi
}
case " ${JAVA_OPTS:-} " in
*" -Xmx"* | *" -XX:MaxRAMPercentage"*) ;;
*) JAVA_OPTS="$(jvm_heap_opts) -XX:+UseContainerSupport -Dfile.encoding=UTF-8${JAVA_OPTS:+ ${JAVA_OPTS}}" ;;
esac
export JAVA_OPTS
unset -f jvm_memory_bytes jvm_heap_opts
SH
	} >"${build_dir}/.profile.d/jvm.sh"
}
