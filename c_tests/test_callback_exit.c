/* A thread ended from inside a restorer's callback (pthread_exit: what CPython before 3.14 does
   to threads that want the GIL while the interpreter exits) must not abort the process: the
   forced unwind passes through the library's frames and the worker parks. The process then
   exits with its own status (0), not 134 ("FATAL: exception not rethrown"). */
#include "test_util.h"

#ifdef _WIN32
int main(void) {
  WMT_SKIP_ON_WINDOWS("test_callback_exit", "pthread_exit unwinds on glibc only; ExitThread does not unwind (docs/platforms.md)");
}
#else

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

static atomic_int g_ended_thread;

static void on_event(const wm_event *e, void *context) {
  (void)context;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
    atomic_store(&g_ended_thread, 1);
    pthread_exit(NULL);
  }
}

int main(void) {
  char base[512], bdir[600];
  wm_backup_restorer *r = NULL;
  int i;

  wmt_temp_dir(base, sizeof base, "callback-exit");
  setenv("WMLICENSE_HOME", base, 1);
  snprintf(bdir, sizeof bdir, "%s/backup", base);
  REQUIRE_OK(wm_backup_restorer_create(on_event, NULL, &r));
  REQUIRE_OK(wm_backup_restorer_set_prop(r, WM_PROP_BACKUP_PATH, WM_TYPE_STRING, (const uint8_t *)bdir,
                                         (uint32_t)strlen(bdir)));
  REQUIRE_OK(wm_backup_restorer_backup(r, 0));
  for (i = 0; i < 500 && !atomic_load(&g_ended_thread); i++) usleep(10000);
  CHECK(atomic_load(&g_ended_thread));
  usleep(100000); /* the forced unwind has run through the library by now */
  /* The operation never ends (its worker is parked): no destroy, which would wait for it. The
     process exits around the parked worker. */
  wmt_rm_rf(base);
  return wmt_finish("test_callback_exit");
}
#endif
