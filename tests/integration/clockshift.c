/* clockshift: a test tool, never part of dynod. Preloaded (LD_PRELOAD) into a process
 * of a sandbox machine, it shifts that process's wall clock (CLOCK_REALTIME and
 * CLOCK_REALTIME_COARSE through clock_gettime, time(), gettimeofday()) by a number of
 * seconds read from the file named by CLOCKSHIFT_FILE ("+3600", "-3600", "0"), re-read
 * at most every 100 ms of the real monotonic clock: the test steps the clock by writing
 * the file. Nothing else is touched: the monotonic and boot-time clocks, sleeps and
 * timers stay the kernel's, so a process that sleeps on CLOCK_MONOTONIC (CPython's
 * time.sleep: clock_nanosleep with TIMER_ABSTIME) keeps working.
 *
 * Why not Debian's libfaketime (bookworm: 0.9.10), tried with FAKETIME_TIMESTAMP_FILE,
 * FAKETIME_DONT_FAKE_MONOTONIC=1 and FAKETIME_NO_CACHE=1 in a machine:
 * - dynod: its clock_nanosleep rebases a TIMER_ABSTIME deadline on CLOCK_MONOTONIC as
 *   ftpl_starttime.mon + (deadline - the faked wall time) even with
 *   FAKETIME_DONT_FAKE_MONOTONIC (upstream fixed it in 0.9.11, commit 0c2e3d4), so
 *   CPython 3.11's time.sleep calls clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME,
 *   {tv_sec=-1796234748, ...}) and raises "OSError: [Errno 22] Invalid argument"
 *   (strace; dynod dies in Supervisor.wait_settled at start).
 * - journald: its timerfd_settime rebases every TFD_TIMER_ABSTIME value onto the faked
 *   wall clock whatever the timerfd's clock (sd-event arms CLOCK_MONOTONIC and
 *   CLOCK_BOOTTIME timerfds), so after a step of +1 h the value is negative and
 *   journald exits with "Failed to run event loop: Invalid argument", restarted until
 *   its start limit. systemd (PID 1) runs on the same sd-event, so it was not tried.
 *
 * The machine shares the host's CLOCK_REALTIME (time namespaces do not cover it), so
 * this is the only way to step "the" clock for dynod without stepping the host's. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static long offset;
static struct timespec checked = {-1, 0};

static long read_offset(void) {
    const char *path = getenv("CLOCKSHIFT_FILE");
    long value = 0;
    if (path == NULL)
        return 0;
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return 0;
    if (fscanf(f, "%ld", &value) != 1)
        value = 0;
    fclose(f);
    return value;
}

static long current_offset(void) {
    struct timespec now;
    if (real_clock_gettime == NULL)
        real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    real_clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (now.tv_sec - checked.tv_sec) * 1000 + (now.tv_nsec - checked.tv_nsec) / 1000000;
    if (checked.tv_sec < 0 || ms >= 100) {
        offset = read_offset();
        checked = now;
    }
    return offset;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    if (real_clock_gettime == NULL)
        real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE))
        ts->tv_sec += current_offset();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out != NULL)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
