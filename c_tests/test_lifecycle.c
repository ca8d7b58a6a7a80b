/* The life of a backup restorer under load (SPEC §2 handles, §4 "Events", "Operations"):
   (a) destroy while an operation runs waits for END, and nothing is delivered afterwards;
   (b) destroy from inside the restorer's own callback (on BEGIN, on a RESTRICTED_LICENSE mid-stream);
   (c) the next operation started from inside END, and wait() covering both;
   (d) wait() from inside the own callback: WM_E_BACKUPRESTORE_BUSY while the operation runs,
       WM_S_OK from END (the restorer is idle then);
   (e) wait() with a 0 ms timeout while an operation runs and after it ended;
   (f) 200 restorers at once on the shared worker pool: bounded thread count;
   (g) two restorers backing up to the same BackupPath at once. */
#include "stress_util.h"

static char g_home[512];
static unsigned g_big;         /* licenses of the big store */
static char g_big_store[600];  /* g_big licenses */
static char g_small_store[600];

#define SMALL_COUNT 2000u

static void path_in_home(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "%s/%s", g_home, name);
}

static int file_exists(const char *dir, const char *name) {
  char p[800];
  struct stat st;
  if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p) return 0;
  return stat(p, &st) == 0;
}

/* Waits up to `ms` until `dir` holds nothing but licenses.wmlb and hidden *.lock files (a
   cancelled backup removes its temporary file while it winds down). */
static int wait_dir_clean(const char *dir, unsigned ms) {
  double deadline = wms_now_ms() + ms;
  int unexpected = 0;
  for (;;) {
    int n = wms_list_dir(dir, "licenses.wmlb", &unexpected);
    if (n < 0 || unexpected == 0) return 1;
    if (wms_now_ms() > deadline) return 0;
    wms_sleep_ms(20);
  }
}

static wm_backup_restorer *new_restorer(wms_recorder *rec, const char *store, const char *backup_dir) {
  wm_backup_restorer *r = NULL;
  wms_recorder_init(rec);
  REQUIRE_OK(wm_backup_restorer_create(wms_record, rec, &r));
  rec->restorer = r;
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_BACKUP_PATH, backup_dir));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_RESTORE_PATH, backup_dir));
  return r;
}

/* Every call on a destroyed handle is WM_E_HANDLE (and destroy again does nothing). */
static void check_dead_handle(wm_backup_restorer *r) {
  uint32_t count = 0;
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_release(r, 0), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_cancel_release(r), WM_E_HANDLE);
  CHECK_HR(wms_set_prop(r, WM_PROP_BACKUP_PATH, "/nowhere"), WM_E_HANDLE);
  CHECK_HR(wm_backup_restorer_get_prop_count(r, &count), WM_E_HANDLE);
  wm_backup_restorer_destroy(r);
}

/* ------------------------------------------------------------------ (a) */
static void case_a_destroy_while_running(void) {
  static wms_recorder rec;
  char dir[600];
  wm_backup_restorer *r;
  size_t events, ends;
  double t;
  wms_event end;

  path_in_home(dir, sizeof dir, "backup-a");
  r = new_restorer(&rec, g_big_store, dir);
  /* Held in the middle of its stream (the big store's one restricted license) until destroy
     has cancelled it: destroy waits for END, so the hold ends from another thread. */
  wms_hold_at(&rec, WM_STATUS_RESTRICTED_LICENSE);
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  CHECK(wms_wait_held(&rec, 60000));
  t = wms_now_ms();
  wms_release_after(&rec, 100);
  wm_backup_restorer_destroy(r);
  ends = wms_end_count(&rec); /* END must have been delivered before destroy returned */
  printf("  (a) destroy of a running backup returned after %.1f ms\n", wms_now_ms() - t);
  CHECK(ends == 1);
  end = wms_last_end(&rec);
  CHECK_HR(end.hr, WM_E_OPERATION_CANCELED);
  CHECK(end.processed < end.total);
  events = wms_event_count(&rec);
  wms_sleep_ms(200);
  CHECK(wms_event_count(&rec) == events);
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "(a) destroyed backup");
  check_dead_handle(r);
  CHECK(!file_exists(dir, "licenses.wmlb"));
  CHECK(wait_dir_clean(dir, 0)); /* destroy returned after END: the temp file is gone already */

  /* Destroy at once after the start: END still comes, before destroy returns. */
  wms_recorder_free(&rec);
  r = new_restorer(&rec, g_big_store, dir);
  wms_hold_at(&rec, WM_STATUS_BACKUPRESTORE_BEGIN); /* still in BEGIN when destroy comes */
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  wms_release_after(&rec, 100);
  wm_backup_restorer_destroy(r);
  CHECK(wms_end_count(&rec) == 1);
  end = wms_last_end(&rec);
  CHECK_HR(end.hr, WM_E_OPERATION_CANCELED);
  events = wms_event_count(&rec);
  wms_sleep_ms(200);
  CHECK(wms_event_count(&rec) == events);
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "(a) backup destroyed at once");
  check_dead_handle(r);
  CHECK(!file_exists(dir, "licenses.wmlb"));
  CHECK(wait_dir_clean(dir, 0));
  wms_recorder_free(&rec);
}

/* ------------------------------------------------------------------ (b) */
typedef struct {
  wm_status on;
  int fired;
  size_t index;         /* index of the event in whose callback destroy was called */
  wm_hresult wait_after; /* wm_backup_restorer_wait on the handle right after destroy */
} destroy_ctx;

static void hook_destroy(wms_recorder *rec, const wm_event *e, size_t index) {
  destroy_ctx *d = (destroy_ctx *)rec->user;
  wm_hresult hr;
  if (e->status != d->on) return;
  pthread_mutex_lock(&rec->mu);
  if (d->fired) {
    pthread_mutex_unlock(&rec->mu);
    return;
  }
  pthread_mutex_unlock(&rec->mu);
  wm_backup_restorer_destroy(rec->restorer);
  hr = wm_backup_restorer_wait(rec->restorer, 0);
  pthread_mutex_lock(&rec->mu);
  d->fired = 1;
  d->index = index;
  d->wait_after = hr;
  pthread_mutex_unlock(&rec->mu);
}

static void case_b_destroy_in_callback(wms_recorder *recp, wm_status on, const char *dir_name) {
  static destroy_ctx contexts[2];
  destroy_ctx *d = on == WM_STATUS_BACKUPRESTORE_BEGIN ? &contexts[0] : &contexts[1];
  char dir[600], label[100];
  wm_backup_restorer *r;
  double deadline;
  int fired = 0;
  size_t index = 0, events;
  wm_hresult wait_after = 0;

  snprintf(label, sizeof label, "(b) destroy inside %s", wmt_status_name(on));
  path_in_home(dir, sizeof dir, dir_name);
  memset(d, 0, sizeof *d);
  d->on = on;
  r = new_restorer(recp, g_big_store, dir);
  recp->user = d;
  recp->hook = hook_destroy;
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  deadline = wms_now_ms() + 60000;
  while (!fired && wms_now_ms() < deadline) {
    wms_sleep_ms(1);
    pthread_mutex_lock(&recp->mu);
    fired = d->fired;
    index = d->index;
    wait_after = d->wait_after;
    pthread_mutex_unlock(&recp->mu);
  }
  CHECK(fired);
  if (!fired) {
    wms_dump_events(recp, label);
    return;
  }
  CHECK_HR(wait_after, WM_E_HANDLE);
  /* The operation winds down on its worker (it was cancelled by the destroy); nothing more
     reaches the callback. Give it time to get to its first cancellation check, then wait
     until its temporary file is gone. */
  wms_sleep_ms(500);
  CHECK(wait_dir_clean(dir, 30000));
  wms_sleep_ms(300);
  events = wms_event_count(recp);
  CHECK(events == index + 1);
  CHECK(wms_end_count(recp) == 0);
  wms_sleep_ms(200);
  CHECK(wms_event_count(recp) == events);
  if (events != index + 1) wms_dump_events(recp, label);
  CHECK(!recp->concurrent && !recp->on_main_thread);
  check_dead_handle(r);
  /* Cancelled by the destroy: no backup appeared. */
  CHECK(!file_exists(dir, "licenses.wmlb"));
  printf("  %s: %zu event(s) delivered, none after the destroy\n", label, events);
  /* *recp stays alive: the library may still hold the context until the job has wound down. */
}

/* ------------------------------------------------------------------ (c) */
typedef struct {
  char new_store[600];
  int started;
  wm_hresult set_hr, restore_hr;
  int in_start;    /* set while restore() runs inside the callback */
  int reentered;   /* an event arrived inside that call */
} chain_ctx;

static void hook_chain(wms_recorder *rec, const wm_event *e, size_t index) {
  chain_ctx *c = (chain_ctx *)rec->user;
  (void)index;
  if (c->in_start) c->reentered = 1;
  if (e->status == WM_STATUS_BACKUPRESTORE_END && e->operation == WM_OPERATION_BACKUP && !c->started) {
    c->started = 1;
    c->set_hr = wms_set_prop(rec->restorer, WM_PROP_STORE_PATH, c->new_store);
    c->in_start = 1;
    c->restore_hr = wm_backup_restorer_restore(rec->restorer, WM_RESTORE_INDIVIDUALIZE);
    c->in_start = 0;
  }
}

static void case_c_chain_from_end(void) {
  static wms_recorder rec;
  static chain_ctx c;
  char dir[600];
  wm_backup_restorer *r;
  wms_event evs[256];
  size_t n, i, first_end = 0, ends = 0;
  double t = wms_now_ms();

  path_in_home(dir, sizeof dir, "backup-c");
  memset(&c, 0, sizeof c);
  path_in_home(c.new_store, sizeof c.new_store, "store-c-restored");
  r = new_restorer(&rec, g_small_store, dir);
  rec.user = &c;
  rec.hook = hook_chain;
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  /* wait returned: both operations ended and their END callbacks returned. */
  CHECK(wms_end_count(&rec) == 2);
  CHECK(c.started);
  CHECK_HR(c.set_hr, WM_S_OK);
  CHECK_HR(c.restore_hr, WM_S_OK);
  CHECK(!c.reentered);
  CHECK(!rec.concurrent && !rec.on_main_thread);
  n = wms_snapshot(&rec, evs, 256);
  for (i = 0; i < n; i++) {
    if (evs[i].status == WM_STATUS_BACKUPRESTORE_END) {
      if (ends++ == 0) first_end = i;
    }
  }
  CHECK(n >= 6 && ends == 2);
  if (n >= 6 && ends == 2) {
    CHECK(evs[0].status == WM_STATUS_BACKUPRESTORE_BEGIN && evs[0].operation == WM_OPERATION_BACKUP);
    CHECK(evs[first_end].operation == WM_OPERATION_BACKUP);
    CHECK_HR(evs[first_end].hr, WM_S_OK);
    CHECK(evs[first_end].processed == SMALL_COUNT);
    for (i = 0; i < first_end; i++) CHECK(evs[i].operation == WM_OPERATION_BACKUP);
    for (i = first_end + 1; i < n; i++) CHECK(evs[i].operation == WM_OPERATION_RESTORE);
    CHECK(evs[first_end + 1].status == WM_STATUS_BACKUPRESTORE_BEGIN);
    CHECK(evs[first_end + 2].status == WM_STATUS_BACKUPRESTORE_CONNECTING);
    CHECK(evs[first_end + 3].status == WM_STATUS_BACKUPRESTORE_DISCONNECTING);
    CHECK(evs[n - 1].status == WM_STATUS_BACKUPRESTORE_END);
    CHECK_HR(evs[n - 1].hr, WM_S_OK);
    CHECK(evs[n - 1].processed == SMALL_COUNT && evs[n - 1].total == SMALL_COUNT);
  }
  if (wms_end_count(&rec) != 2 || n < 6) wms_dump_events(&rec, "(c) chain");
  CHECK(wms_store_count(c.new_store) == SMALL_COUNT);
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_OK);
  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
  printf("  (c) backup + restore started from END: %.0f ms\n", wms_now_ms() - t);
}

/* ------------------------------------------------------------------ (d) */
typedef struct {
  wm_hresult begin_0, begin_50, begin_inf, end_0, end_inf;
} wait_ctx;

static void hook_wait(wms_recorder *rec, const wm_event *e, size_t index) {
  wait_ctx *w = (wait_ctx *)rec->user;
  (void)index;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
    w->begin_0 = wm_backup_restorer_wait(rec->restorer, 0);
    w->begin_50 = wm_backup_restorer_wait(rec->restorer, 50);
    w->begin_inf = wm_backup_restorer_wait(rec->restorer, WM_INFINITE);
  } else if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    w->end_0 = wm_backup_restorer_wait(rec->restorer, 0);
    w->end_inf = wm_backup_restorer_wait(rec->restorer, WM_INFINITE);
  }
}

static void case_d_wait_in_callback(void) {
  static wms_recorder rec;
  static wait_ctx w;
  char dir[600];
  wm_backup_restorer *r;

  path_in_home(dir, sizeof dir, "backup-d");
  w.begin_0 = w.begin_50 = w.begin_inf = w.end_0 = w.end_inf = 12345;
  r = new_restorer(&rec, g_small_store, dir);
  rec.user = &w;
  rec.hook = hook_wait;
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  if (!wms_wait_ends(&rec, 1, 60000)) {
    fprintf(stderr, "(d) no END within 60 s: wait() inside the callback blocks (deadlock)\n");
    wms_dump_events(&rec, "(d)");
    _exit(1);
  }
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  CHECK_HR(wms_last_end(&rec).hr, WM_S_OK);
  CHECK_HR(w.begin_0, WM_E_BACKUPRESTORE_BUSY);
  CHECK_HR(w.begin_50, WM_E_BACKUPRESTORE_BUSY);
  CHECK_HR(w.begin_inf, WM_E_BACKUPRESTORE_BUSY);
  /* While END is delivered the restorer is idle (nothing was started from the callback). */
  CHECK_HR(w.end_0, WM_S_OK);
  CHECK_HR(w.end_inf, WM_S_OK);
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "(d)");
  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
}

/* ------------------------------------------------------------------ (e) */
static void case_e_wait_timeout(void) {
  static wms_recorder rec;
  char dir[600];
  wm_backup_restorer *r;
  double t;

  path_in_home(dir, sizeof dir, "backup-e");
  r = new_restorer(&rec, g_big_store, dir);
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_OK); /* idle before anything started */
  /* Held in the middle of its stream until the waits below are done. */
  wms_hold_at(&rec, WM_STATUS_RESTRICTED_LICENSE);
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  t = wms_now_ms();
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_FALSE);
  printf("  (e) wait(0) on a running backup returned in %.2f ms\n", wms_now_ms() - t);
  t = wms_now_ms();
  CHECK_HR(wm_backup_restorer_wait(r, 30), WM_S_FALSE);
  t = wms_now_ms() - t;
  CHECK(t >= 25.0);
  printf("  (e) wait(30) on a running backup returned in %.1f ms\n", t);
  CHECK(wms_wait_held(&rec, 60000));
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_FALSE);
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_OK);
  wms_release(&rec);
  CHECK(wms_wait_ends(&rec, 1, 60000));
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_OK);
  CHECK_HR(wms_last_end(&rec).hr, WM_E_OPERATION_CANCELED);
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "(e)");
  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
}

/* ------------------------------------------------------------------ (f) */
static void case_f_many_restorers(void) {
  const unsigned count = wms_quick() ? 40u : 200u;
  static wms_recorder recs[200];
  static wm_backup_restorer *rs[200];
  static char stores[200][600], dirs[200][600];
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  long workers = cpus < 2 ? 2 : cpus > 16 ? 16 : cpus;
  const char *env = getenv("WMLICENSE_WORKERS");
  long limit;
  int max_threads = 0, baseline, samples = 0;
  unsigned i, done = 0;
  double t, deadline;

  if (env && atoi(env) >= 1 && atoi(env) <= 256) workers = atoi(env);
  /* Bounded by the pool, never by the number of restorers: this thread, the express worker and
     a spare, then per worker its own thread plus the two helpers a running backup may use (the
     pipeline's other end and the final flush). */
  limit = 3 * workers + 4;
  t = wms_now_ms();
  for (i = 0; i < count; i++) {
    snprintf(stores[i], sizeof stores[i], "%s/many/store-%03u", g_home, i);
    snprintf(dirs[i], sizeof dirs[i], "%s/many/backup-%03u", g_home, i);
    wms_fill_store(stores[i], i * 100u, 20, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 0, 0);
    rs[i] = new_restorer(&recs[i], stores[i], dirs[i]);
  }
  printf("  (f) %u stores of 20 licenses and restorers made in %.0f ms\n", count, wms_now_ms() - t);
  baseline = wms_thread_count();
  t = wms_now_ms();
  for (i = 0; i < count; i++) CHECK_HR(wm_backup_restorer_backup(rs[i], 0), WM_S_OK);
  deadline = wms_now_ms() + 300000;
  while (wms_now_ms() < deadline) {
    int threads = wms_thread_count();
    samples++;
    if (threads > max_threads) max_threads = threads;
    for (done = 0, i = 0; i < count; i++) done += wms_end_count(&recs[i]) > 0;
    if (done == count) break;
    wms_sleep_ms(2);
  }
  printf("  (f) %u backups on %ld workers ended in %.0f ms; threads: %d before, max %d while running "
         "(%d samples, limit %ld)\n",
         count, workers, wms_now_ms() - t, baseline, max_threads, samples, limit);
  CHECK(done == count);
  CHECK(max_threads > 0 && max_threads <= limit);
  for (i = 0; i < count; i++) {
    CHECK_HR(wm_backup_restorer_wait(rs[i], WM_INFINITE), WM_S_OK);
    CHECK_HR(wms_last_end(&recs[i]).hr, WM_S_OK);
    CHECK(wms_last_end(&recs[i]).processed == 20);
    wms_check_shape(&recs[i], WM_OPERATION_BACKUP, "(f) one of many");
    CHECK(file_exists(dirs[i], "licenses.wmlb"));
  }
  wms_sleep_ms(100);
  for (i = 0; i < count; i++) {
    CHECK(wms_end_count(&recs[i]) == 1);
    wm_backup_restorer_destroy(rs[i]);
    wms_recorder_free(&recs[i]);
  }
}

/* ------------------------------------------------------------------ (g) */
static void case_g_same_backup_path(void) {
  static wms_recorder rec1, rec2;
  char dir[600];
  wm_backup_restorer *r1, *r2;
  wms_event e1, e2, b1, b2;
  int unexpected = 0;
  double overlap;

  path_in_home(dir, sizeof dir, "backup-g");
  r1 = new_restorer(&rec1, g_big_store, dir);
  r2 = new_restorer(&rec2, g_big_store, dir);
  CHECK_HR(wm_backup_restorer_backup(r1, WM_BACKUP_OVERWRITE), WM_S_OK);
  CHECK_HR(wm_backup_restorer_backup(r2, WM_BACKUP_OVERWRITE), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r1, WM_INFINITE), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r2, WM_INFINITE), WM_S_OK);
  wms_check_shape(&rec1, WM_OPERATION_BACKUP, "(g) first");
  wms_check_shape(&rec2, WM_OPERATION_BACKUP, "(g) second");
  e1 = wms_last_end(&rec1);
  e2 = wms_last_end(&rec2);
  CHECK(wms_snapshot(&rec1, &b1, 1) == 1);
  CHECK(wms_snapshot(&rec2, &b2, 1) == 1);
  overlap = (e1.at_ms < e2.at_ms ? e1.at_ms : e2.at_ms) - (b1.at_ms > b2.at_ms ? b1.at_ms : b2.at_ms);
  if (e1.hr == WM_S_OK && e2.hr == WM_S_OK) {
    printf("  (g) both backups ended OK: they ran one after the other (BEGIN..END overlap %.0f ms)\n",
           overlap);
    /* Holding the path is exclusive: two OK writers may overlap only by the delivery of BEGIN
       and END, never by the seconds a backup of this size takes. */
    CHECK(overlap < 1000.0);
  } else {
    CHECK((e1.hr == WM_S_OK && e2.hr == WM_E_BACKUPRESTORE_BUSY) ||
          (e1.hr == WM_E_BACKUPRESTORE_BUSY && e2.hr == WM_S_OK));
    printf("  (g) overlapping backups to one path: restorer %d ended OK, restorer %d ended "
           "WM_E_BACKUPRESTORE_BUSY (\"%s\"); BEGIN..END overlap %.0f ms\n",
           e1.hr == WM_S_OK ? 1 : 2, e1.hr == WM_S_OK ? 2 : 1,
           e1.hr == WM_S_OK ? e2.message : e1.message, overlap);
  }
  CHECK(e1.hr == WM_S_OK || e2.hr == WM_S_OK);
  CHECK(wms_list_dir(dir, "licenses.wmlb", &unexpected) >= 1 && unexpected == 0);
  /* The file left is a whole, valid backup. */
  wms_recorder_reset(&rec1);
  CHECK_HR(wm_backup_restorer_restore(r1, WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r1, WM_INFINITE), WM_S_OK);
  e1 = wms_last_end(&rec1);
  CHECK_HR(e1.hr, WM_S_OK);
  /* Into the store it came from: every license is already there with the same issued_at, so
     each one is kept (skipped); the whole file still had to authenticate. (The big store's one
     restricted license is not in a backup.) */
  CHECK(e1.total == g_big - 1 && e1.processed + e1.skipped == g_big - 1);
  printf("  (g) the remaining file verifies: processed %llu, skipped %llu of %llu\n",
         (unsigned long long)e1.processed, (unsigned long long)e1.skipped,
         (unsigned long long)e1.total);
  wms_check_shape(&rec1, WM_OPERATION_RESTORE, "(g) verify");
  wm_backup_restorer_destroy(r1);
  wm_backup_restorer_destroy(r2);
  wms_recorder_free(&rec1);
  wms_recorder_free(&rec2);
}

static void timed(const char *what, void (*fn)(void)) {
  double t = wms_now_ms();
  fn();
  printf("  %-40s %6.0f ms\n", what, wms_now_ms() - t);
  fflush(stdout);
}

static wms_recorder g_rec_b[2]; /* never freed: the library may hold them until the jobs wound down */
static void case_b_begin(void) {
  case_b_destroy_in_callback(&g_rec_b[0], WM_STATUS_BACKUPRESTORE_BEGIN, "backup-b1");
}
/* In the middle of the stream: the big store's one restricted license (a PROGRESS would be
   there only in a backup that takes longer than 100 ms; the last one comes after the file is in
   place). */
static void case_b_restricted(void) {
  case_b_destroy_in_callback(&g_rec_b[1], WM_STATUS_RESTRICTED_LICENSE, "backup-b2");
}

int main(void) {
  double t_all = wms_now_ms(), t;

  wms_fresh_home(g_home, sizeof g_home, "lifecycle");
  g_big = wms_quick() ? 5000u : 100000u;
  path_in_home(g_big_store, sizeof g_big_store, "store-big");
  path_in_home(g_small_store, sizeof g_small_store, "store-small");
  printf("test_lifecycle: big store %u licenses, small store %u\n", g_big, SMALL_COUNT);
  t = wms_now_ms();
  wms_fill_store(g_big_store, 0, g_big, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 0, 0);
  /* One license in the middle without the backup right: its RESTRICTED_LICENSE is where a
     backup is held while it runs (wms_hold_at). */
  wms_fill_store(g_big_store, g_big / 2, 1, WM_RIGHT_PLAYBACK, 0, 0);
  wms_fill_store(g_small_store, 0, SMALL_COUNT, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 16, 16);
  printf("  %-40s %6.0f ms\n", "fill the stores", wms_now_ms() - t);

  timed("(a) destroy while running", case_a_destroy_while_running);
  timed("(b) destroy inside BEGIN", case_b_begin);
  timed("(b) destroy inside RESTRICTED_LICENSE", case_b_restricted);
  timed("(c) next operation from END", case_c_chain_from_end);
  timed("(d) wait inside the callback", case_d_wait_in_callback);
  timed("(e) wait with timeouts", case_e_wait_timeout);
  timed("(f) many restorers at once", case_f_many_restorers);
  timed("(g) two writers, one BackupPath", case_g_same_backup_path);

  wmt_rm_rf(g_home);
  printf("  test_lifecycle total: %.0f ms\n", wms_now_ms() - t_all);
  return wmt_finish("test_lifecycle");
}
