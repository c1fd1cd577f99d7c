package tokens

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/credfile"
)

// Record is what the keysafe keeps for one account.
type Record struct {
	Account      string    `json:"account"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Scopes       []string  `json:"scopes,omitempty"`
	ConsentedBy  string    `json:"consented_by,omitempty"` // UPN from the id token
	ConsentedAt  time.Time `json:"consented_at,omitzero"`
	LastRefresh  time.Time `json:"last_refresh,omitzero"`
	State        State     `json:"state,omitempty"`
	LastError    string    `json:"last_error,omitempty"` // an explanation, never a secret
}

// Store keeps Records. FileKeysafe is the built-in one; a shared backend
// (Vault, a Kubernetes Secret) for several replicas can replace it.
type Store interface {
	Get(account string) (Record, bool, error)
	// Put replaces account's record durably before returning.
	Put(r Record) error
	Delete(account string) error
	List() ([]Record, error)
}

// KeysafeVersion is the file format; bump it on incompatible change.
const KeysafeVersion = 1

// aad binds ciphertexts to this use and version.
var aad = []byte("oauthrelay keysafe v1")

type keysafeFile struct {
	Version    int    `json:"version"`
	Nonce      string `json:"nonce"`
	Ciphertext string `json:"ciphertext"`
}

// ErrWrongKey means the keysafe could not be decrypted with the key given.
var ErrWrongKey = errors.New("keysafe cannot be decrypted with this key")

// FileKeysafe is one AES-256-GCM encrypted file, written atomically (temp,
// fsync, rename, fsync dir) with mode 0600. Several processes (serve and a
// `connect` command) may share it: every change is a read-modify-write
// under an flock, and readers reload when the file changes.
type FileKeysafe struct {
	path string
	aead cipher.AEAD
	// beforeRename is a test hook between writing the temp file and renaming it.
	beforeRename func()

	mu      sync.Mutex
	records map[string]Record
	stamp   fileStamp
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// OpenFileKeysafe opens (or, if absent, starts) the keysafe at path. A wrong
// key is reported as ErrWrongKey and the file is left as it is.
func OpenFileKeysafe(path string, key []byte) (*FileKeysafe, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("keysafe key must be 32 bytes (AES-256), got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &FileKeysafe{path: path, aead: aead, records: map[string]Record{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("keysafe %s: %w", path, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reloadLocked(true); err != nil {
		return nil, err
	}
	return k, nil
}

// reloadLocked reads the file if it changed since the last read.
func (k *FileKeysafe) reloadLocked(force bool) error {
	info, err := os.Stat(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		k.records, k.stamp = map[string]Record{}, fileStamp{}
		return nil
	}
	if err != nil {
		return fmt.Errorf("keysafe %s: %w", k.path, err)
	}
	st := fileStamp{info.ModTime(), info.Size()}
	if !force && st == k.stamp {
		return nil
	}
	raw, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("keysafe %s: %w", k.path, err)
	}
	recs, err := k.decrypt(raw)
	if err != nil {
		return fmt.Errorf("keysafe %s: %w", k.path, err)
	}
	k.records, k.stamp = recs, st
	return nil
}

func (k *FileKeysafe) decrypt(raw []byte) (map[string]Record, error) {
	var f keysafeFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("not a keysafe file (%v)", err)
	}
	if f.Version != KeysafeVersion {
		return nil, fmt.Errorf("keysafe format version %d; this build reads %d", f.Version, KeysafeVersion)
	}
	nonce, err1 := base64.StdEncoding.DecodeString(f.Nonce)
	ct, err2 := base64.StdEncoding.DecodeString(f.Ciphertext)
	if err1 != nil || err2 != nil || len(nonce) != k.aead.NonceSize() {
		return nil, errors.New("keysafe file is damaged")
	}
	plain, err := k.aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: keysafe.key / OAUTHRELAY_KEYSAFE_KEY (or keysafe.key_file) is not the key this file was written with; the file was left untouched", ErrWrongKey)
	}
	recs := map[string]Record{}
	if err := json.Unmarshal(plain, &recs); err != nil {
		return nil, errors.New("keysafe content is damaged")
	}
	return recs, nil
}

func (k *FileKeysafe) encrypt(recs map[string]Record) ([]byte, error) {
	plain, err := json.Marshal(recs)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return json.MarshalIndent(keysafeFile{
		Version:    KeysafeVersion,
		Nonce:      base64.StdEncoding.EncodeToString(nonce),
		Ciphertext: base64.StdEncoding.EncodeToString(k.aead.Seal(nil, nonce, plain, aad)),
	}, "", "  ")
}

// Get returns account's record, reloading the file if another process changed it.
func (k *FileKeysafe) Get(account string) (Record, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reloadLocked(false); err != nil {
		return Record{}, false, err
	}
	r, ok := k.records[account]
	return r, ok, nil
}

// List returns every record.
func (k *FileKeysafe) List() ([]Record, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := k.reloadLocked(false); err != nil {
		return nil, err
	}
	out := make([]Record, 0, len(k.records))
	for _, r := range k.records {
		out = append(out, r)
	}
	return out, nil
}

// Put stores r durably.
func (k *FileKeysafe) Put(r Record) error {
	return k.update(func(recs map[string]Record) { recs[r.Account] = r })
}

// Delete forgets account.
func (k *FileKeysafe) Delete(account string) error {
	return k.update(func(recs map[string]Record) { delete(recs, account) })
}

// update is a read-modify-write under an exclusive flock, so serve and a
// concurrent `oauthrelay connect` never lose each other's changes.
func (k *FileKeysafe) update(change func(map[string]Record)) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	lock, err := os.OpenFile(k.path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("keysafe %s: %w", k.path, err)
	}
	defer lock.Close()
	keepOwner(lock, k.path)
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("keysafe %s: lock: %w", k.path, err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if err := k.reloadLocked(false); err != nil {
		return err
	}
	recs := make(map[string]Record, len(k.records)+1)
	for a, r := range k.records {
		recs[a] = r
	}
	change(recs)
	data, err := k.encrypt(recs)
	if err != nil {
		return err
	}
	if err := k.writeAtomic(data); err != nil {
		return fmt.Errorf("keysafe %s: %w", k.path, err)
	}
	k.records = recs
	if info, err := os.Stat(k.path); err == nil {
		k.stamp = fileStamp{info.ModTime(), info.Size()}
	}
	return nil
}

func (k *FileKeysafe) writeAtomic(data []byte) error {
	dir := filepath.Dir(k.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(k.path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	keepOwner(tmp, k.path)
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if k.beforeRename != nil {
		k.beforeRename()
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// keepOwner gives f the owner and group of the file at like, or, if that
// does not exist, of its folder. Run as root (the CLI beside a service with
// its own user), a write then never takes the service's state away from it.
// Not being allowed to (not root) is fine: the file is then the writer's
// own, as it would be anyway.
func keepOwner(f *os.File, like string) {
	info, err := os.Stat(like)
	if err != nil {
		info, err = os.Stat(filepath.Dir(like))
	}
	if err != nil {
		return
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) == os.Geteuid() && int(st.Gid) == os.Getegid() {
		return
	}
	f.Chown(int(st.Uid), int(st.Gid))
}

// LoadKey finds the keysafe key: keyB64 (keysafe.key or
// OAUTHRELAY_KEYSAFE_KEY) if set, else keyFile (default <keysafe>.key). If
// neither exists, a random key is written to keyFile with mode 0600 and its
// path logged. The key itself is never logged.
func LoadKey(keyB64, keyFile, keysafePath string, log *slog.Logger) ([]byte, error) {
	if keyB64 != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keyB64))
		if err != nil || len(key) != 32 {
			return nil, errors.New("keysafe.key: must be the base64 of 32 random bytes — make one with: head -c 32 /dev/urandom | base64")
		}
		return key, nil
	}
	if keyFile == "" {
		keyFile = keysafePath + ".key"
	}
	raw, err := credfile.Read(keyFile)
	if err == nil {
		key, derr := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
		if derr != nil || len(key) != 32 {
			return nil, fmt.Errorf("keysafe.key_file %s: must hold the base64 of 32 random bytes", keyFile)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("keysafe.key_file %s: %w", keyFile, err)
	}
	if _, serr := os.Stat(keysafePath); serr == nil {
		return nil, fmt.Errorf("keysafe %s exists but its key file %s does not — restore the key file, or set keysafe.key", keysafePath, keyFile)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := writeSecretFile(keyFile, base64.StdEncoding.EncodeToString(key)); err != nil {
		return nil, fmt.Errorf("keysafe.key_file %s: %w", keyFile, err)
	}
	log.Warn("keysafe: created a new random key; back it up with the keysafe", "key_file", keyFile)
	return key, nil
}

// writeSecretFile creates path (0600, never overwriting) holding secret.
func writeSecretFile(path, secret string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	keepOwner(f, filepath.Dir(path)) // new: the folder says whose it is
	_, err = f.WriteString(secret + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// AdminTokenPath is where a generated admin token is kept: beside the keysafe.
func AdminTokenPath(keysafePath string) string {
	return filepath.Join(filepath.Dir(keysafePath), "admin.token")
}

// LoadOrCreateAdminToken returns the admin token stored at path, creating a
// random one (0600) on first start and logging where it is — never the token.
func LoadOrCreateAdminToken(path string, log *slog.Logger) (string, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		if tok := strings.TrimSpace(string(raw)); tok != "" {
			return tok, nil
		}
		return "", fmt.Errorf("admin token file %s is empty — delete it to have a new token made, or set admin.token", path)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := base64.RawURLEncoding.EncodeToString(b)
	if err := writeSecretFile(path, tok); err != nil {
		return "", fmt.Errorf("admin token file %s: %w", path, err)
	}
	log.Warn("admin: no admin.token configured; generated one", "token_file", path)
	return tok, nil
}
