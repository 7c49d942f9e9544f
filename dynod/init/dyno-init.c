/*
 * dyno-init: the PID 1 of a dyno. Small, static, never a resident interpreter
 * (measured: ~0.2 MiB per dyno, against ~5 MiB for a Python shim).
 *
 *   dyno-init [--no-pidns] [--no-cgroupns] -- COMMAND [ARG...]
 *
 * Default (systemd < 257, no PrivatePIDs=): the unit's main process
 *   outer: PR_SET_CHILD_SUBREAPER, read its cgroups, unshare(CLONE_NEWPID|CLONE_NEWNS|
 *          CLONE_NEWCGROUP), fork, drop every capability, forward signals to the
 *          inner init, exit with its status.
 *   inner: PID 1 of the new PID namespace: PR_SET_PDEATHSIG(SIGKILL), / rprivate,
 *          a fresh /proc (hidepid=invisible) that shows only the dyno's processes,
 *          a fresh /sys/fs/cgroup that shows only the dyno's own cgroup (below),
 *          drop every capability, fork+exec COMMAND, reap every child, forward
 *          signals, exit with COMMAND's status (128+N when killed by signal N).
 * The unit grants CAP_SYS_ADMIN as an ambient capability for unshare and mount only;
 * the command runs as a non-root user with no capabilities (exec of a non-root,
 * non-setuid binary with an empty ambient set keeps none).
 *
 * --no-pidns: no PID namespace of its own (systemd >= 257's PrivatePIDs=yes made us
 * PID 1 already; a build step shares the host's): reap and forward, and still the
 * cgroup namespace (unshare(CLONE_NEWNS|CLONE_NEWCGROUP) in this process).
 * --no-cgroupns: keep the unit's /sys/fs/cgroup (systemd >= 257 makes the namespace
 * itself, ProtectControlGroups=strict). With both, no capability is needed.
 *
 * The cgroup view. Without a cgroup namespace /sys/fs/cgroup is the host's whole tree:
 * every other app's slice, dyno units, their memory and CPU use and host PIDs. systemd
 * put the unit's main process in the unit's cgroup before exec, so a cgroup namespace
 * made here is rooted at the dyno's own cgroup; /sys/fs/cgroup is mounted again,
 * read-only, from inside it: cgroup2 on a unified (v2) host; on a v1 or hybrid host a
 * tmpfs holding each hierarchy in which the process sits in the unit's own cgroup
 * (memory, pids, cpu... and name=systemd, unified), named and linked as systemd does
 * (cpu,cpuacct with cpu and cpuacct links). A hierarchy where the process is elsewhere
 * (a controller the unit does not use leaves it in an ancestor) is left out: its root
 * would be that ancestor's, with other units in it. The dyno still reads its own
 * limits where runtimes look (memory.max, memory.limit_in_bytes, /proc/self/cgroup
 * "0::/"), as in a container.
 *
 * Forwarding: TERM, INT, HUP, QUIT, USR1 and USR2. When dyno-init is PID 1 of the
 * namespace, TERM/INT/HUP/QUIT go to every process of the dyno (Heroku: "This signal
 * sends to all processes in the dyno", dyno-shutdown-behavior); USR1/USR2 go to the
 * command only. Exit status 143 after SIGTERM is what systemd's
 * SuccessExitStatus=143 and Heroku's "Process exited with status 143" expect.
 *
 * A terminal on stdin (one-off dynos attached with a pty, `dynoctl run bash`): the
 * unit's session (systemd made it its controlling terminal) lets go of it, and the
 * command gets its own session with that terminal as controlling terminal (setsid +
 * TIOCSCTTY), so job control, Ctrl-C (SIGINT to the foreground process group),
 * SIGWINCH on a resize and SIGHUP when the terminal's master closes work as in ssh.
 *
 * Exit status 127: COMMAND not found/executable; 125: dyno-init itself failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_INIT_FAILED 125
#define EXIT_NOT_FOUND 127

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NFORWARDED (sizeof(forwarded) / sizeof(forwarded[0]))

static void die(const char *what)
{
	fprintf(stderr, "dyno-init: %s: %s\n", what, strerror(errno));
	_exit(EXIT_INIT_FAILED);
}

static void noop(int sig) { (void)sig; }

/* Block the forwarded signals and SIGCHLD; they are taken with sigwaitinfo().
 * A no-op handler too: a PID namespace's init drops default-disposition signals
 * sent from inside its namespace, and blocked+handled is never dropped. */
static void take_signals(sigset_t *set)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = noop;
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	for (size_t i = 0; i < NFORWARDED; i++) {
		sigaddset(set, forwarded[i]);
		if (sigaction(forwarded[i], &sa, NULL) < 0)
			die("sigaction");
	}
	if (sigaction(SIGCHLD, &sa, NULL) < 0)
		die("sigaction");
	if (sigprocmask(SIG_BLOCK, set, NULL) < 0)
		die("sigprocmask");
}

/* The child gets default dispositions and an empty mask before exec. */
static void restore_signals(void)
{
	sigset_t none;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* strict: a failure is fatal. Without the PID namespace there is nothing to drop
 * (the unit's bounding set is empty) and the seccomp filter may refuse capset. */
static void drop_capabilities(int strict)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	/* EINVAL: kernel without ambient capabilities; nothing to clear then. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL &&
	    strict)
		die("PR_CAP_AMBIENT_CLEAR_ALL");
	if (syscall(SYS_capset, &hdr, data) < 0 && strict)
		die("capset");
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_INIT_FAILED;
}

static int all_processes_signal(int sig)
{
	return sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

/* Wait for `child`, reaping every other child on the way (we are a subreaper or a
 * PID 1), forwarding signals. Returns the exit code derived from child's status. */
static int supervise(pid_t child, const sigset_t *set, int whole_namespace)
{
	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(set, &info);
		if (sig < 0) {
			if (errno == EINTR)
				continue;
			die("sigwaitinfo");
		}
		if (sig != SIGCHLD) {
			if (whole_namespace && all_processes_signal(sig))
				kill(-1, sig); /* every process of the namespace but us */
			else
				kill(child, sig);
			continue;
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid < 0 && errno == EINTR)
				continue;
			if (pid <= 0)
				break;
			if (pid == child)
				return status_code(status);
		}
	}
}

static pid_t spawn(char **argv)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		restore_signals();
		/* The terminal is ours to take: not the controlling terminal of another
		 * session (systemd does not make a passed descriptor one). */
		if (isatty(STDIN_FILENO)) {
			if (setsid() < 0)
				die("setsid");
			if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
				die("TIOCSCTTY");
		}
		execvp(argv[0], argv);
		fprintf(stderr, "dyno-init: %s: %s\n", argv[0], strerror(errno));
		_exit(errno == ENOENT || errno == EACCES ? EXIT_NOT_FOUND : EXIT_INIT_FAILED);
	}
	return pid;
}

static void fresh_proc(void)
{
	const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	/* hidepid=invisible needs Linux 5.8; hidepid=2 is the older spelling. */
	if (mount("proc", "/proc", "proc", flags, "hidepid=invisible") == 0)
		return;
	if (mount("proc", "/proc", "proc", flags, "hidepid=2") == 0)
		return;
	die("mount /proc");
}

#define CGROUP_ROOT "/sys/fs/cgroup"
#define MAX_HIERARCHIES 32
#define MOUNT_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* One hierarchy to mount under /sys/fs/cgroup: its directory, and "" for cgroup2 or
 * the cgroup v1 mount options. */
struct hierarchy {
	char dir[128];
	char options[160];
};

struct cgroup_view {
	int unified;  /* cgroup v2 only: one cgroup2 mount at /sys/fs/cgroup */
	int count;    /* hierarchies to mount (0 on v2 means an empty, read-only tmpfs) */
	struct hierarchy h[MAX_HIERARCHIES];
};

/* The cgroups this process is in, before the cgroup namespace hides their paths:
 * which hierarchies show the unit's own cgroup ("0::" on v2 and hybrid hosts, the
 * name=systemd one on a pure v1 host). A process at a hierarchy's root (not in a
 * unit of its own) mounts none. */
static void read_cgroups(struct cgroup_view *view)
{
	static char lines[MAX_HIERARCHIES][PATH_MAX];
	int n = 0;
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (f == NULL)
		die("open /proc/self/cgroup");
	while (n < MAX_HIERARCHIES && fgets(lines[n], sizeof(lines[n]), f) != NULL) {
		size_t len = strcspn(lines[n], "\n");
		if (lines[n][len] != '\n') {
			fputs("dyno-init: a line of /proc/self/cgroup is too long\n", stderr);
			_exit(EXIT_INIT_FAILED);
		}
		lines[n][len] = '\0';
		n++;
	}
	fclose(f);

	const char *own = NULL;
	const char *systemd_path = NULL;
	for (int i = 0; i < n; i++) {
		char *first = strchr(lines[i], ':');
		char *second = first ? strchr(first + 1, ':') : NULL;
		if (second == NULL)
			continue;
		if (first + 1 == second && strncmp(lines[i], "0:", 2) == 0 && strcmp(second + 1, "/") != 0)
			own = second + 1;
		else if (strncmp(first + 1, "name=systemd:", 13) == 0)
			systemd_path = second + 1;
	}
	if (own == NULL && systemd_path != NULL && strcmp(systemd_path, "/") != 0)
		own = systemd_path;

	memset(view, 0, sizeof(*view));
	view->unified = n == 1 && strncmp(lines[0], "0::", 3) == 0;
	if (own == NULL || view->unified) {
		view->count = own != NULL;
		return;
	}
	for (int i = 0; i < n; i++) {
		char *first = strchr(lines[i], ':');
		char *second = first ? strchr(first + 1, ':') : NULL;
		if (second == NULL || strcmp(second + 1, own) != 0 || view->count >= MAX_HIERARCHIES)
			continue;
		*second = '\0';
		const char *controllers = first + 1;
		struct hierarchy *h = &view->h[view->count];
		int len;
		if (*controllers == '\0')
			len = snprintf(h->dir, sizeof(h->dir), "unified");
		else if (strncmp(controllers, "name=", 5) == 0) {
			len = snprintf(h->dir, sizeof(h->dir), "%s", controllers + 5);
			if (len > 0 && (size_t)len < sizeof(h->dir))
				len = snprintf(h->options, sizeof(h->options), "none,%s", controllers);
		} else {
			len = snprintf(h->dir, sizeof(h->dir), "%s", controllers);
			if (len > 0 && (size_t)len < sizeof(h->dir))
				len = snprintf(h->options, sizeof(h->options), "%s", controllers);
		}
		if (len <= 0 || (size_t)len >= sizeof(h->options) || strchr(h->dir, '/') != NULL)
			continue;
		view->count++;
	}
}

/* Inside the new mount and cgroup namespaces: /sys/fs/cgroup again, read-only,
 * showing only the cgroup the namespace is rooted at. */
static void fresh_cgroups(const struct cgroup_view *view)
{
	const unsigned long ro = MOUNT_FLAGS | MS_RDONLY;
	const char *tmpfs_options = "mode=0755,size=64k";
	char path[256];
	if (view->unified && view->count > 0) {
		if (mount("cgroup2", CGROUP_ROOT, "cgroup2", ro, NULL) < 0)
			die("mount cgroup2 on " CGROUP_ROOT);
		return;
	}
	if (mount("tmpfs", CGROUP_ROOT, "tmpfs", MOUNT_FLAGS, tmpfs_options) < 0)
		die("mount tmpfs on " CGROUP_ROOT);
	for (int i = 0; i < view->count; i++) {
		const struct hierarchy *h = &view->h[i];
		snprintf(path, sizeof(path), CGROUP_ROOT "/%s", h->dir);
		if (mkdir(path, 0755) < 0)
			die("mkdir under " CGROUP_ROOT);
		int cgroup2 = h->options[0] == '\0';
		if (mount("cgroup", path, cgroup2 ? "cgroup2" : "cgroup", ro,
			  cgroup2 ? NULL : h->options) < 0) {
			fprintf(stderr, "dyno-init: mount %s: %s\n", path, strerror(errno));
			_exit(EXIT_INIT_FAILED);
		}
		/* systemd's names: cpu and cpuacct link to cpu,cpuacct. */
		if (cgroup2 || strchr(h->dir, ',') == NULL || strchr(h->dir, '=') != NULL)
			continue;
		char names[sizeof(h->dir)];
		char *save = NULL;
		memcpy(names, h->dir, sizeof(names));
		for (char *name = strtok_r(names, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
			snprintf(path, sizeof(path), CGROUP_ROOT "/%s", name);
			if (symlink(h->dir, path) < 0 && errno != EEXIST)
				die("symlink under " CGROUP_ROOT);
		}
	}
	if (mount(NULL, CGROUP_ROOT, NULL, MS_REMOUNT | ro, tmpfs_options) < 0)
		die("remount " CGROUP_ROOT " read-only");
}

static int run_pidns(char **argv, int cgroupns)
{
	sigset_t set;
	struct cgroup_view view;
	take_signals(&set);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	if (cgroupns)
		read_cgroups(&view);
	if (unshare(CLONE_NEWPID | CLONE_NEWNS | (cgroupns ? CLONE_NEWCGROUP : 0)) < 0)
		die(cgroupns ? "unshare(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWCGROUP)"
			     : "unshare(CLONE_NEWPID|CLONE_NEWNS)");
	pid_t outer = getpid();
	pid_t inner = fork();
	if (inner < 0)
		die("fork");
	if (inner > 0) {
		drop_capabilities(1);
		return supervise(inner, &set, 0);
	}
	/* PID 1 of the dyno. If the outer process is gone already, so is the dyno. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		die("PR_SET_PDEATHSIG");
	if (getppid() != outer && getppid() != 0)
		_exit(EXIT_INIT_FAILED);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / rprivate");
	fresh_proc();
	if (cgroupns)
		fresh_cgroups(&view);
	drop_capabilities(1);
	pid_t app = spawn(argv);
	return supervise(app, &set, 1);
}

static int run_plain(char **argv, int cgroupns)
{
	sigset_t set;
	take_signals(&set);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	if (cgroupns) {
		struct cgroup_view view;
		read_cgroups(&view);
		if (unshare(CLONE_NEWNS | CLONE_NEWCGROUP) < 0)
			die("unshare(CLONE_NEWNS|CLONE_NEWCGROUP)");
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			die("make / rprivate");
		fresh_cgroups(&view);
	}
	drop_capabilities(cgroupns);
	pid_t app = spawn(argv);
	return supervise(app, &set, getpid() == 1);
}

/* systemd makes a terminal passed as stdin the controlling terminal of the unit's
 * session, whose leader is us: give it up, so the command can take it in its own
 * session. Giving it up sends SIGHUP to the terminal's foreground group (ours): ignored
 * for that moment. Not a terminal, not ours: nothing to do. */
static void release_terminal(void)
{
	struct sigaction ignore, old;
	if (!isatty(STDIN_FILENO) || getsid(0) != getpid())
		return;
	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	if (sigaction(SIGHUP, &ignore, &old) < 0)
		die("sigaction");
	(void)ioctl(STDIN_FILENO, TIOCNOTTY);
	if (sigaction(SIGHUP, &old, NULL) < 0)
		die("sigaction");
}

static void usage(void)
{
	fputs("usage: dyno-init [--no-pidns] [--no-cgroupns] -- COMMAND [ARG...]\n", stderr);
	exit(EXIT_INIT_FAILED);
}

int main(int argc, char **argv)
{
	int pidns = 1;
	int cgroupns = 1;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--no-pidns") == 0)
			pidns = 0;
		else if (strcmp(argv[i], "--no-cgroupns") == 0)
			cgroupns = 0;
		else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else
			usage();
	}
	if (i >= argc)
		usage();
	release_terminal();
	return pidns ? run_pidns(argv + i, cgroupns) : run_plain(argv + i, cgroupns);
}
