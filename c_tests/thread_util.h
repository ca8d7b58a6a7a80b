/* Helpers of the tests that call wmlicense from several application threads: checks that may
   fail on any thread, a watchdog that turns a hang into a clean failure, one-shot flags with a
   timeout, a barrier with a timeout and a "run on a thread, give up after a while" helper.
   Include after nothing else: it includes stress_util.h (and so test_util.h). */
#ifndef WMLICENSE_THREAD_UTIL_H
#define WMLICENSE_THREAD_UTIL_H

#include "stress_util.h"

#include <pthread.h>
#include <stdarg.h>
#include <time.h>

/* ---------------------------------------------------------------- checks from any thread */

static pthread_mutex_t wmth_fail_mu = PTHREAD_MUTEX_INITIALIZER;

/* Reports one failed check (printf-style message) and counts it in wmt_failures. */
static inline void wmth_fail(const char *file, int line, const char *fmt, ...) {
  va_list ap;
  pthread_mutex_lock(&wmth_fail_mu);
  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  wmt_failures++;
  pthread_mutex_unlock(&wmth_fail_mu);
}

static inline int wmth_failures(void) {
  int n;
  pthread_mutex_lock(&wmth_fail_mu);
  n = wmt_failures;
  pthread_mutex_unlock(&wmth_fail_mu);
  return n;
}

/* CHECK and CHECK_HR that may run on any thread (callbacks included). Both evaluate to 1 when
   the check held, 0 otherwise. */
#define TCHECK(cond) \
  ((cond) ? 1 : (wmth_fail(__FILE__, __LINE__, "CHECK failed: %s", #cond), 0))

#define TCHECK_HR(expr, expected) wmth_check_hr((expr), (expected), #expr, __FILE__, __LINE__)

static inline int wmth_check_hr(wm_hresult got, wm_hresult want, const char *what, const char *file,
                                int line) {
  if (got == want) return 1;
  wmth_fail(file, line, "%s returned 0x%08x (%s), expected 0x%08x (%s)", what, (unsigned)got,
            wm_hresult_message(got), (unsigned)want, wm_hresult_message(want));
  return 0;
}

/* ---------------------------------------------------------------- time */

/* An absolute CLOCK_REALTIME deadline `ms` from now, for pthread_cond_timedwait. */
static inline struct timespec wmth_deadline(unsigned ms) {
  struct timespec d;
  clock_gettime(CLOCK_REALTIME, &d);
  d.tv_sec += (time_t)(ms / 1000u);
  d.tv_nsec += (long)(ms % 1000u) * 1000000L;
  if (d.tv_nsec >= 1000000000L) {
    d.tv_sec++;
    d.tv_nsec -= 1000000000L;
  }
  return d;
}

/* A generous limit scaled for valgrind (WMLICENSE_TEST_QUICK runs are the valgrind runs). */
static inline unsigned wmth_limit_ms(unsigned ms) {
  return wms_quick() ? ms * 4u : ms;
}

/* ---------------------------------------------------------------- watchdog */

/* One background thread: while armed, when the deadline passes it prints what was still
   running and ends the process with status 1 (a hang becomes a clean, explained failure). */
static pthread_mutex_t wmth_dog_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wmth_dog_cv = PTHREAD_COND_INITIALIZER;
static int wmth_dog_started;
static int wmth_dog_armed;
static double wmth_dog_deadline_ms;
static unsigned wmth_dog_limit_s;
static char wmth_dog_what[256];

static inline void *wmth_dog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wmth_dog_mu);
  for (;;) {
    if (wmth_dog_armed && wms_now_ms() >= wmth_dog_deadline_ms) {
      fprintf(stderr,
              "WATCHDOG: \"%s\" has not finished after %u s: wmlicense is stuck (deadlock or "
              "lost event); failing the test\n",
              wmth_dog_what, wmth_dog_limit_s);
      fflush(stderr);
      fflush(stdout);
      _exit(1);
    }
    if (wmth_dog_armed) {
      struct timespec d = wmth_deadline(100);
      pthread_cond_timedwait(&wmth_dog_cv, &wmth_dog_mu, &d);
    } else {
      pthread_cond_wait(&wmth_dog_cv, &wmth_dog_mu);
    }
  }
  return NULL;
}

/* Arms the watchdog for `what`: the process fails unless wmth_watchdog_disarm (or another arm)
   comes within `seconds` (x4 under WMLICENSE_TEST_QUICK). */
static inline void wmth_watchdog_arm(const char *what, unsigned seconds) {
  pthread_mutex_lock(&wmth_dog_mu);
  if (!wmth_dog_started) {
    pthread_t t;
    if (pthread_create(&t, NULL, wmth_dog_main, NULL) != 0) {
      fprintf(stderr, "cannot start the watchdog thread\n");
      exit(1);
    }
    pthread_detach(t);
    wmth_dog_started = 1;
  }
  wmth_dog_limit_s = wmth_limit_ms(seconds * 1000u) / 1000u;
  wmth_dog_deadline_ms = wms_now_ms() + (double)wmth_dog_limit_s * 1000.0;
  snprintf(wmth_dog_what, sizeof wmth_dog_what, "%s", what);
  wmth_dog_armed = 1;
  pthread_cond_broadcast(&wmth_dog_cv);
  pthread_mutex_unlock(&wmth_dog_mu);
}

static inline void wmth_watchdog_disarm(void) {
  pthread_mutex_lock(&wmth_dog_mu);
  wmth_dog_armed = 0;
  pthread_cond_broadcast(&wmth_dog_cv);
  pthread_mutex_unlock(&wmth_dog_mu);
}

/* ---------------------------------------------------------------- flags */

/* A counter threads can wait on: wmth_flag_add bumps it, wmth_flag_wait waits until it
   reaches a value. Statically initialisable with WMTH_FLAG_INIT. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int value;
} wmth_flag;

#define WMTH_FLAG_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

static inline void wmth_flag_init(wmth_flag *f) {
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  f->value = 0;
}

static inline void wmth_flag_destroy(wmth_flag *f) {
  pthread_mutex_destroy(&f->mu);
  pthread_cond_destroy(&f->cv);
}

static inline void wmth_flag_add(wmth_flag *f, int delta) {
  pthread_mutex_lock(&f->mu);
  f->value += delta;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

static inline void wmth_flag_set(wmth_flag *f, int value) {
  pthread_mutex_lock(&f->mu);
  f->value = value;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
}

static inline int wmth_flag_get(wmth_flag *f) {
  int v;
  pthread_mutex_lock(&f->mu);
  v = f->value;
  pthread_mutex_unlock(&f->mu);
  return v;
}

/* Waits until the value is >= `value`; 1 when it is, 0 after `timeout_ms`. */
static inline int wmth_flag_wait(wmth_flag *f, int value, unsigned timeout_ms) {
  struct timespec d = wmth_deadline(timeout_ms);
  int ok = 1;
  pthread_mutex_lock(&f->mu);
  while (f->value < value) {
    if (pthread_cond_timedwait(&f->cv, &f->mu, &d) != 0 && f->value < value) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&f->mu);
  return ok;
}

/* ---------------------------------------------------------------- barrier with a timeout */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int parties, arrived;
} wmth_barrier;

static inline void wmth_barrier_init(wmth_barrier *b, int parties) {
  pthread_mutex_init(&b->mu, NULL);
  pthread_cond_init(&b->cv, NULL);
  b->parties = parties;
  b->arrived = 0;
}

static inline void wmth_barrier_destroy(wmth_barrier *b) {
  pthread_mutex_destroy(&b->mu);
  pthread_cond_destroy(&b->cv);
}

/* One use only: 1 when every party arrived, 0 when `timeout_ms` passed first. */
static inline int wmth_barrier_wait(wmth_barrier *b, unsigned timeout_ms) {
  struct timespec d = wmth_deadline(timeout_ms);
  int ok = 1;
  pthread_mutex_lock(&b->mu);
  b->arrived++;
  pthread_cond_broadcast(&b->cv);
  while (b->arrived < b->parties) {
    if (pthread_cond_timedwait(&b->cv, &b->mu, &d) != 0 && b->arrived < b->parties) {
      ok = 0;
      break;
    }
  }
  pthread_mutex_unlock(&b->mu);
  return ok;
}

/* ---------------------------------------------------------------- threads */

static inline pthread_t wmth_start(void *(*fn)(void *), void *arg) {
  pthread_t t;
  int rc = pthread_create(&t, NULL, fn, arg);
  if (rc != 0) {
    fprintf(stderr, "pthread_create: %s\n", strerror(rc));
    exit(1);
  }
  return t;
}

/* Runs fn(arg) on a new thread and waits for it up to `timeout_ms`. Returns 1 when it finished
   (the thread is joined), 0 when it is still running (the thread is detached and left; `arg`
   must then stay valid for ever). */
typedef struct {
  void *(*fn)(void *);
  void *arg;
  wmth_flag done;
} wmth_timed_run;

static inline void *wmth_timed_main(void *p) {
  wmth_timed_run *r = (wmth_timed_run *)p;
  r->fn(r->arg);
  wmth_flag_set(&r->done, 1);
  return NULL;
}

static inline int wmth_run_within(void *(*fn)(void *), void *arg, unsigned timeout_ms) {
  /* Leaked when the thread does not finish: it still refers to it. */
  wmth_timed_run *r = (wmth_timed_run *)calloc(1, sizeof *r);
  pthread_t t;
  if (!r) abort();
  r->fn = fn;
  r->arg = arg;
  wmth_flag_init(&r->done);
  t = wmth_start(wmth_timed_main, r);
  if (!wmth_flag_wait(&r->done, 1, timeout_ms)) {
    pthread_detach(t);
    return 0;
  }
  pthread_join(t, NULL);
  wmth_flag_destroy(&r->done);
  free(r);
  return 1;
}

#endif
