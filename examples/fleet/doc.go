// Package fleet is an example, not a library: deploy.yml, an Ansible
// playbook, rolls a new version of a baton-supervised service across hosts
// a few at a time, each host gated by `baton upgrade --wait`, and stops at
// the first host where the new version fails, so that the hosts not reached
// yet keep the old one. fleet_test.go runs it against two batons on this
// machine under load. README.md explains it.
package fleet
