/* Operations queued for a busy worker (SPEC §4: "Cancel and destroy are prompt (100 ms) for an
   operation still queued for a worker"; "Exactly one END per started operation").

   The pool has one worker (WMLICENSE_WORKERS=1). Restorer A's backup holds it: A's BEGIN
   callback blocks until the test releases it. Restorer B's operation is then queued behind A.
   - cancel_restore: B restores (WM_RESTORE_INDIVIDUALIZE) into a StorePath that does not exist;
                     cancelled while queued, its END (WM_E_OPERATION_CANCELED) comes while A still
                     holds the worker, and the store directory is never created.
   - cancel_backup:  the same with a backup into a BackupPath that does not exist.
   - destroy:        wm_backup_restorer_destroy(B) while queued returns while A still holds the
                     worker; B got BEGIN, END(CANCELED); the BackupPath is never created.
   Each case then releases A, which completes normally (END WM_S_OK).
   A case name as argument runs that case only. */
#include "thread_util.h"

enum { CANCEL_RESTORE, CANCEL_BACKUP, DESTROY };

static char g_home[4096];
static char g_small_store[4200];
static char g_backup[4200]; /* a valid backup, for the restore case */

/* How long a cancelled or destroyed queued operation may take while A holds the worker. The
   SPEC says 100 ms; this is only the point where the test stops waiting. */
#define QUEUED_LIMIT_MS 10000u

/* ---------------------------------------------------------------- restorer A */

static wmth_flag g_a_begun = WMTH_FLAG_INIT;   /* A's BEGIN callbacks entered */
static wmth_flag g_a_release = WMTH_FLAG_INIT; /* releases given by the test */

/* A's BEGIN holds the only worker until the test gives release number `user`. */
static void a_hook(wms_recorder *rec, const wm_event *e, size_t index) {
  int release = (int)(intptr_t)rec->user;
  (void)index;
  if (e->status != WM_STATUS_BACKUPRESTORE_BEGIN) return;
  wmth_flag_add(&g_a_begun, 1);
  if (!wmth_flag_wait(&g_a_release, release, wmth_limit_ms(120000)))
    wmth_fail(__FILE__, __LINE__, "restorer A was never released");
}

static int exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* ---------------------------------------------------------------- destroy on a helper thread */

typedef struct {
  wm_backup_restorer *r;
  pthread_t thread;
  double returned_at;
  wmth_flag done;
} destroyer;

static void *destroy_main(void *arg) {
  destroyer *d = (destroyer *)arg;
  wm_backup_restorer_destroy(d->r);
  d->returned_at = wms_now_ms();
  wmth_flag_set(&d->done, 1);
  return NULL;
}

/* ---------------------------------------------------------------- one case */

static const char *kind_name(int kind) {
  return kind == CANCEL_RESTORE ? "cancel_restore" : kind == CANCEL_BACKUP ? "cancel_backup" : "destroy";
}

static void print_events(wms_recorder *rec, const char *label) {
  wms_event ev[16];
  size_t i, n = wms_snapshot(rec, ev, 16);
  printf("  %s events:", label);
  if (!n) printf(" none");
  for (i = 0; i < n; i++) {
    printf(" %s", wmt_status_name(ev[i].status));
    if (ev[i].status == WM_STATUS_BACKUPRESTORE_END) printf("(0x%08x)", (unsigned)ev[i].hr);
  }
  printf("\n");
}

static void run_case(int kind, int number) {
  wms_recorder ra, rb;
  wm_backup_restorer *a = NULL, *b = NULL;
  char a_dir[4200], target[4200];
  const char *label = kind_name(kind);
  wm_operation b_op = kind == CANCEL_RESTORE ? WM_OPERATION_RESTORE : WM_OPERATION_BACKUP;
  destroyer d;
  double t0, dt = -1, released_at;
  int prompt = 0, b_events_after_destroy = -1;
  wms_event end;

  memset(&d, 0, sizeof d);
  memset(&end, 0, sizeof end);
  wms_recorder_init(&ra);
  wms_recorder_init(&rb);
  ra.hook = a_hook;
  ra.user = (void *)(intptr_t)number;
  snprintf(a_dir, sizeof a_dir, "%s/a-backup", g_home);
  /* Where B would write if it ran: must never appear. */
  snprintf(target, sizeof target, "%s/%s-never-created", g_home, label);

  /* A takes the only worker and keeps it. */
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &ra, &a));
  REQUIRE_OK(wms_set_prop(a, WM_PROP_BACKUP_PATH, a_dir));
  REQUIRE_OK(wms_set_prop(a, WM_PROP_STORE_PATH, g_small_store));
  REQUIRE_OK(wm_backup_restorer_backup(a, WM_BACKUP_OVERWRITE));
  if (!wmth_flag_wait(&g_a_begun, number, wmth_limit_ms(30000))) {
    fprintf(stderr, "%s: restorer A's BEGIN never came\n", label);
    exit(1);
  }

  /* B's operation is queued behind A. */
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &rb, &b));
  if (kind == CANCEL_RESTORE) {
    REQUIRE_OK(wms_set_prop(b, WM_PROP_RESTORE_PATH, g_backup));
    REQUIRE_OK(wms_set_prop(b, WM_PROP_STORE_PATH, target));
    REQUIRE_OK(wm_backup_restorer_restore(b, WM_RESTORE_INDIVIDUALIZE));
  } else {
    REQUIRE_OK(wms_set_prop(b, WM_PROP_BACKUP_PATH, target));
    REQUIRE_OK(wms_set_prop(b, WM_PROP_STORE_PATH, g_small_store));
    REQUIRE_OK(wm_backup_restorer_backup(b, 0));
  }
  wms_sleep_ms(50);
  if (wms_event_count(&rb) != 0) {
    wmth_fail(__FILE__, __LINE__, "%s: B got events while A held the only worker: WMLICENSE_WORKERS=1 was not "
              "honoured, nothing is queued", label);
    print_events(&rb, "B");
  }

  /* Cancel or destroy B while it is queued; A still holds the worker. */
  t0 = wms_now_ms();
  if (kind == DESTROY) {
    d.r = b;
    d.returned_at = 0;
    wmth_flag_init(&d.done);
    d.thread = wmth_start(destroy_main, &d);
    prompt = wmth_flag_wait(&d.done, 1, QUEUED_LIMIT_MS);
    if (prompt) {
      dt = d.returned_at - t0;
      b_events_after_destroy = (int)wms_event_count(&rb);
      printf("  destroy: wm_backup_restorer_destroy(B) of the queued backup returned in %.1f ms while A held "
             "the worker\n", dt);
    } else {
      wmth_fail(__FILE__, __LINE__, "destroy: wm_backup_restorer_destroy(B) of a queued backup did not return "
                "within %u ms while A held the only worker", QUEUED_LIMIT_MS);
    }
  } else {
    wm_hresult hr = kind == CANCEL_RESTORE ? wm_backup_restorer_cancel_restore(b) : wm_backup_restorer_cancel_backup(b);
    TCHECK_HR(hr, WM_S_OK);
    prompt = wms_wait_ends(&rb, 1, QUEUED_LIMIT_MS);
    if (prompt) {
      end = wms_last_end(&rb);
      dt = end.at_ms - t0;
      printf("  %s: END of the cancelled queued operation came %.1f ms after the cancel while A held the "
             "worker\n", label, dt);
    } else {
      wmth_fail(__FILE__, __LINE__, "%s: no END within %u ms of cancelling B's queued operation while A held the "
                "only worker", label, QUEUED_LIMIT_MS);
    }
  }
  if (wms_end_count(&ra) != 0)
    wmth_fail(__FILE__, __LINE__, "%s: A ended before it was released", label);

  /* Release A: it completes normally. */
  released_at = wms_now_ms();
  wmth_flag_add(&g_a_release, 1);
  if (!wms_wait_ends(&ra, 1, wmth_limit_ms(30000))) {
    wmth_fail(__FILE__, __LINE__, "%s: A did not end within 30 s of its release", label);
  } else {
    end = wms_last_end(&ra);
    TCHECK_HR(end.hr, WM_S_OK);
    TCHECK_HR(wm_backup_restorer_wait(a, wmth_limit_ms(30000)), WM_S_OK);
    if (wms_check_shape(&ra, WM_OPERATION_BACKUP, "A")) wmth_fail(__FILE__, __LINE__, "%s: A's events", label);
  }

  /* Whatever happened, let B wind down before judging its events. */
  if (kind == DESTROY) {
    if (!prompt) {
      if (wmth_flag_wait(&d.done, 1, wmth_limit_ms(30000))) {
        b_events_after_destroy = (int)wms_event_count(&rb);
        printf("  destroy: wm_backup_restorer_destroy(B) returned only %.1f ms after it was called, %.1f ms after A "
               "was released\n", d.returned_at - t0, d.returned_at - released_at);
      } else {
        /* B's recorder cannot be freed while its restorer may still call it. */
        fprintf(stderr, "%s:%d: destroy: wm_backup_restorer_destroy(B) did not return even after A ended\n",
                __FILE__, __LINE__);
        exit(1);
      }
    }
    pthread_join(d.thread, NULL);
    wmth_flag_destroy(&d.done);
  } else if (!prompt) {
    if (wms_wait_ends(&rb, 1, wmth_limit_ms(30000))) {
      end = wms_last_end(&rb);
      printf("  %s: END came only %.1f ms after the cancel, %.1f ms after A was released\n", label,
             end.at_ms - t0, end.at_ms - released_at);
    }
    TCHECK_HR(wm_backup_restorer_wait(b, wmth_limit_ms(30000)), WM_S_OK);
  }

  /* B: exactly BEGIN, END(CANCELED) (one END per started operation), and it touched nothing. */
  wms_sleep_ms(200);
  print_events(&rb, "B");
  {
    wms_event ev[16];
    size_t n = wms_snapshot(&rb, ev, 16);
    if (n == 0) {
      wmth_fail(__FILE__, __LINE__, "%s: B's started operation got no event at all (expected BEGIN, "
                "END(WM_E_OPERATION_CANCELED): exactly one END per started operation)", label);
    } else {
      if (wms_check_shape(&rb, b_op, "B")) wmth_fail(__FILE__, __LINE__, "%s: B's events", label);
      if (n != 2 || ev[0].status != WM_STATUS_BACKUPRESTORE_BEGIN || ev[n - 1].status != WM_STATUS_BACKUPRESTORE_END)
        wmth_fail(__FILE__, __LINE__, "%s: B's events are not exactly BEGIN, END", label);
      if (ev[n - 1].status == WM_STATUS_BACKUPRESTORE_END)
        TCHECK_HR(ev[n - 1].hr, WM_E_OPERATION_CANCELED);
    }
    if (kind == DESTROY && b_events_after_destroy >= 0 && (int)n != b_events_after_destroy)
      wmth_fail(__FILE__, __LINE__, "destroy: B got %d callback(s) after wm_backup_restorer_destroy returned",
                (int)n - b_events_after_destroy);
  }
  if (exists(target))
    wmth_fail(__FILE__, __LINE__, "%s: the cancelled queued operation created %s", label, target);

  wm_backup_restorer_destroy(a);
  if (kind != DESTROY) wm_backup_restorer_destroy(b);
  wms_recorder_free(&ra);
  wms_recorder_free(&rb);
}

/* A backup of the small store, made while the worker is free: what the restore case restores. */
static void make_source_backup(void) {
  wms_recorder rec;
  wm_backup_restorer *r = NULL;
  wms_event end;
  wms_recorder_init(&rec);
  snprintf(g_backup, sizeof g_backup, "%s/source-backup", g_home);
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &rec, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_BACKUP_PATH, g_backup));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, g_small_store));
  REQUIRE_OK(wm_backup_restorer_backup(r, 0));
  REQUIRE_OK(wm_backup_restorer_wait(r, WM_INFINITE));
  end = wms_last_end(&rec);
  if (end.status != WM_STATUS_BACKUPRESTORE_END || end.hr != WM_S_OK) {
    fprintf(stderr, "the source backup failed: 0x%08x %s\n", (unsigned)end.hr, end.message);
    exit(1);
  }
  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
}

int main(int argc, char **argv) {
  static const int kinds[] = {CANCEL_RESTORE, CANCEL_BACKUP, DESTROY};
  size_t i;
  int number = 0, ran = 0;
  /* The pool size is read when the first restorer is created. */
  setenv("WMLICENSE_WORKERS", "1", 1);
  wms_fresh_home(g_home, sizeof g_home, "wmlicense-queued");
  snprintf(g_small_store, sizeof g_small_store, "%s/small-store", g_home);
  wms_fill_store(g_small_store, 0, 8, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 0, 0);
  make_source_backup();
  for (i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    const char *name = kind_name(kinds[i]);
    int before = wmth_failures();
    if (argc > 1 && strcmp(argv[1], name) != 0) continue;
    printf("[%s]\n", name);
    fflush(stdout);
    wmth_watchdog_arm(name, 120);
    run_case(kinds[i], ++number);
    wmth_watchdog_disarm();
    printf("[%s] %s\n", name, wmth_failures() == before ? "PASS" : "FAIL");
    fflush(stdout);
    ran++;
  }
  if (!ran) {
    fprintf(stderr, "no case named %s\n", argv[1]);
    return 2;
  }
  if (wmth_failures() == 0) wmt_rm_rf(g_home);
  return wmt_finish("test_queued");
}
