package main

import (
	"fmt"
	"os"

	"github.com/oauthrelay/oauthrelay/integration/fakem365"
	"github.com/spf13/cobra"
)

func newFakeM365Cmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:    "fake-m365",
		Short:  "Run a fake Microsoft 365 (Entra ID + SMTP) on 127.0.0.1 for testing",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := fakem365.Start()
			if err != nil {
				return err
			}
			defer m.Close()
			caFile, _ := cmd.Flags().GetString("ca-out")
			if err := m.WriteCA(caFile); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "entra_authority: %s\nsmtp_addr: %s\nca_file: %s\n", m.Entra.URL, m.SMTP.Addr, caFile)
			fmt.Fprintln(w, "# point accounts[].authority and upstream.addr/ca_file here; Ctrl-C stops")
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().String("ca-out", os.TempDir()+"/fakem365-ca.pem", "where to write the fake's CA certificate")
	return cmd
}
