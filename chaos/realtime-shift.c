/*
 * realtime-shift.c: an LD_PRELOAD library that shifts the wall clock of one process by a number of
 * seconds read from the file named by REALTIME_SHIFT_FILE (re-read at most every 200 ms, so a
 * running process can be stepped forward or back, as an NTP step does). chaos/clock-skew runs the
 * service under it for every skew: an hour ahead, an hour behind, and stepped back mid-load.
 *
 * What it models, faithfully: a host whose CLOCK_REALTIME is off, or is stepped, while the
 * monotonic clocks run on. Shifted: clock_gettime(CLOCK_REALTIME[_COARSE]), gettimeofday, time.
 * The absolute wall-clock deadlines a process hands the kernel are shifted back by the same
 * offset, so that they mean what the process meant: sem_timedwait (always CLOCK_REALTIME, the
 * timed waits of Dispatch semaphores) and clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME).
 * Untouched: CLOCK_MONOTONIC, CLOCK_BOOTTIME and every timer or sleep on them (Swift's
 * ContinuousClock and Task.sleep, SwiftNIO's timers), relative sleeps and timeouts.
 * Not modelled: pthread_cond_timedwait and realtime timerfds or POSIX timers with absolute
 * deadlines (their clock cannot be told from outside); a wait on one of them computed before a
 * step ends early or late by the offset, which a real step also does to a realtime deadline, and
 * one computed under a constant offset is off by it, which a real host is not. See chaos/README.md.
 *
 * Why not libfaketime: libfaketime 0.9.10 rewrites every absolute timerfd deadline by its offset,
 * whatever the timer's clock. The Swift runtime arms its monotonic timers that way, so under
 * libfaketime Task.sleep(for: .milliseconds(500)) does not return (measured on this project's
 * 2-core machine with an offset of +1 h and FAKETIME_DONT_FAKE_MONOTONIC=1; on others, only with
 * negative offsets): the service's rollup loop stopped after its first run. No real clock step
 * does that. (docs/decisions.md 73 and 77.)
 *
 * Built by chaos/clock-skew (meterctl chaos) with: clang -shared -fPIC -O2 -o <so> this.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <semaphore.h>
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
        if (ts->tv_nsec < 0) { ts->tv_nsec += 1000000000L; ts->tv_sec -= 1; }
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

static long long to_ns(const struct timespec *ts) { return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec; }

static struct timespec from_ns(long long t) {
    struct timespec ts;
    ts.tv_sec = (time_t)(t / 1000000000LL);
    ts.tv_nsec = (long)(t % 1000000000LL);
    if (ts.tv_nsec < 0) { ts.tv_nsec += 1000000000L; ts.tv_sec -= 1; }
    return ts;
}

/* An absolute deadline on the shifted wall clock, as the kernel's real one. */
static struct timespec unshifted(const struct timespec *abstime) { return from_ns(to_ns(abstime) - shift()); }

typedef int (*sem_timedwait_fn)(sem_t *, const struct timespec *);

int sem_timedwait(sem_t *sem, const struct timespec *abstime) {
    static _Atomic(sem_timedwait_fn) real_fn;
    sem_timedwait_fn f = atomic_load(&real_fn);
    if (!f) {
        f = (sem_timedwait_fn)dlsym(RTLD_NEXT, "sem_timedwait");
        atomic_store(&real_fn, f);
    }
    if (abstime->tv_nsec < 0 || abstime->tv_nsec >= 1000000000L) return f(sem, abstime);  /* EINVAL, as without us */
    struct timespec real_deadline = unshifted(abstime);
    return f(sem, &real_deadline);
}

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t id, int flags, const struct timespec *t, struct timespec *remain) {
    static _Atomic(clock_nanosleep_fn) real_fn;
    clock_nanosleep_fn f = atomic_load(&real_fn);
    if (!f) {
        f = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
        atomic_store(&real_fn, f);
    }
    if (id == CLOCK_REALTIME && (flags & TIMER_ABSTIME) && t && t->tv_nsec >= 0 && t->tv_nsec < 1000000000L) {
        struct timespec real_deadline = unshifted(t);
        return f(id, flags, &real_deadline, remain);
    }
    return f(id, flags, t, remain);
}
