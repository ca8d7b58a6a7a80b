/* A process forked after the parent started the worker pool runs operations of its own: the
   child starts its own workers instead of waiting forever for its parent's. */
#include "test_util.h"

#ifdef _WIN32
int main(void) {
  WMT_SKIP_ON_WINDOWS("test_fork", "fork() does not exist on Windows");
}
#else

#include <sys/wait.h>

static void on_event(const wm_event *e, void *ctx) {
  if (e->status == WM_STATUS_BACKUPRESTORE_END) *(wm_hresult *)ctx = e->hr;
}

/* Backs up a one-license store under `home`; returns END's hr (or the failing call's). */
static wm_hresult backup_once(const char *home) {
  char store_dir[600], backup_dir[600];
  wm_license_store *s = NULL;
  wm_backup_restorer *r = NULL;
  wm_license l;
  char kid[32];
  uint8_t key[16];
  wm_hresult end = WM_E_UNEXPECTED, hr;
  snprintf(store_dir, sizeof store_dir, "%s/store", home);
  snprintf(backup_dir, sizeof backup_dir, "%s/backup", home);
  wmt_make_license(&l, 1, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
  if ((hr = wm_license_store_open(store_dir, &s)) != WM_S_OK) return hr;
  hr = wm_license_store_put(s, &l);
  wm_license_store_close(s);
  if (hr != WM_S_OK) return hr;
  if ((hr = wm_backup_restorer_create(on_event, &end, &r)) != WM_S_OK) return hr;
  hr = wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)store_dir,
                                   (uint32_t)strlen(store_dir));
  if (hr == WM_S_OK)
    hr = wm_backup_restorer_set_prop(r, WM_PROP_BACKUP_PATH, WM_TYPE_STRING, (const uint8_t *)backup_dir,
                                     (uint32_t)strlen(backup_dir));
  if (hr == WM_S_OK) hr = wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE);
  /* A child without workers would wait here forever; 30 s is plenty for one license. */
  if (hr == WM_S_OK) hr = wm_backup_restorer_wait(r, 30000);
  wm_backup_restorer_destroy(r);
  return hr == WM_S_OK ? end : (hr == WM_S_FALSE ? WM_E_UNEXPECTED : hr);
}

int main(void) {
  char home[512];
  pid_t pid;
  int status = 0;
  wmt_temp_dir(home, sizeof home, "fork");
  setenv("WMLICENSE_HOME", home, 1);
  CHECK_HR(backup_once(home), WM_S_OK); /* the parent's pool is running now */
  pid = fork();
  /* _exit: the child holds memory of threads it did not inherit; no leak check can judge it. */
  if (pid == 0) _exit(backup_once(home) == WM_S_OK ? 0 : 1);
  CHECK(pid > 0);
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK_HR(backup_once(home), WM_S_OK); /* and the parent's still works */
  wmt_rm_rf(home);
  return wmt_finish("test_fork");
}
#endif
