/*
 * realtime-shift.c: an LD_PRELOAD library that shifts the wall clock (CLOCK_REALTIME, and the
 * gettimeofday and time calls) of one process by a number of seconds read from the file named by
 * REALTIME_SHIFT_FILE (re-read at most every 200 ms, so a running process can be moved). Nothing
 * else: CLOCK_MONOTONIC and CLOCK_BOOTTIME, timers and sleeps are untouched, which is exactly what
 * an NTP step or a badly set host clock does to a process.
 *
 * Why not libfaketime alone: libfaketime 0.9.10 also rewrites absolute timerfd deadlines by the
 * offset whatever the timer's clock, so with a negative offset (a clock behind) every monotonic
 * timer of the Swift runtime fires an offset late: Task.sleep(for: .seconds(1)) never returns.
 * chaos/clock-skew uses libfaketime for the clock ahead and the jump back (positive offsets), and
 * this library for the clock behind. See chaos/README.md.
 *
 * Built by chaos/clock-skew (meterctl chaos) with: clang -shared -fPIC -O2 -o <so> this.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static _Atomic(clock_gettime_fn) real_clock_gettime;
static _Atomic long long offset_ns;
static _Atomic long long read_at_ns = -1;

static clock_gettime_fn real(void) {
    clock_gettime_fn f = atomic_load(&real_clock_gettime);
    if (!f) {
        f = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
        atomic_store(&real_clock_gettime, f);
    }
    return f;
}

/* The offset in nanoseconds, from the file when the last read is older than 200 ms. */
static long long shift(void) {
    struct timespec mono;
    real()(CLOCK_MONOTONIC, &mono);
    long long now = (long long)mono.tv_sec * 1000000000LL + mono.tv_nsec;
    long long last = atomic_load(&read_at_ns);
    if (last < 0 || now - last >= 200000000LL) {
        atomic_store(&read_at_ns, now);
        const char *path = getenv("REALTIME_SHIFT_FILE");
        FILE *f = path ? fopen(path, "r") : NULL;
        if (f) {
            double seconds;
            if (fscanf(f, "%lf", &seconds) == 1) atomic_store(&offset_ns, (long long)(seconds * 1e9));
            fclose(f);
        }
    }
    return atomic_load(&offset_ns);
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = real()(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        long long t = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + shift();
        ts->tv_sec = (time_t)(t / 1000000000LL);
        ts->tv_nsec = (long)(t % 1000000000LL);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
