package httpclient

import (
	"os"
	"os/exec"
)

func execCommand(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	return cmd
}
