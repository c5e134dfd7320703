package server

// Validation of tree requests: the checks a create, update, rename, link,
// unlink or batch request must pass before any transaction starts.

import (
	"kumo/remote/api"
)

func validNameMAC(mac string) error {
	if !api.ValidHexID(mac) {
		return badRequest("invalid name_mac")
	}
	return nil
}

func validName(name []byte) error {
	if len(name) == 0 || len(name) > api.MaxNameSize {
		return badRequest("sealed name must be 1..%d bytes", api.MaxNameSize)
	}
	return nil
}

func validAttrs(attrs []byte) error {
	if len(attrs) == 0 || len(attrs) > api.MaxAttrsSize {
		return badRequest("sealed attributes must be 1..%d bytes", api.MaxAttrsSize)
	}
	return nil
}

func validChunks(typ string, ids []string) error {
	if typ == api.TypeDir && len(ids) > 0 {
		return badRequest("directories have no chunks")
	}
	for _, id := range ids {
		if !api.ValidHexID(id) {
			return badRequest("invalid chunk id")
		}
	}
	return nil
}

func validateCreate(r *api.CreateRequest) error {
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	if r.ID <= api.RootID {
		return badRequest("node ids 0 and 1 are reserved")
	}
	if r.Type != api.TypeDir && r.Type != api.TypeFile {
		return badRequest("type must be %q or %q", api.TypeDir, api.TypeFile)
	}
	if err := validNameMAC(r.NameMAC); err != nil {
		return err
	}
	if err := validName(r.Name); err != nil {
		return err
	}
	if err := validAttrs(r.Attrs); err != nil {
		return err
	}
	return validChunks(r.Type, r.Chunks)
}

func validateUpdate(id uint64, r *api.UpdateRequest) error {
	if id == 0 {
		return badRequest("invalid node id")
	}
	if err := validAttrs(r.Attrs); err != nil {
		return err
	}
	return validChunks(api.TypeFile, r.Chunks)
}

func validateRename(r *api.RenameRequest) error {
	if r.SrcParent == 0 || r.DstParent == 0 {
		return badRequest("invalid parent")
	}
	if err := validNameMAC(r.SrcNameMAC); err != nil {
		return err
	}
	if err := validNameMAC(r.DstNameMAC); err != nil {
		return err
	}
	if err := validName(r.Name); err != nil {
		return err
	}
	switch r.Mode {
	case api.RenameExchange:
		return validName(r.SrcName)
	case api.RenamePlain, api.RenameNoReplace:
		if len(r.SrcName) != 0 {
			return badRequest("src_name is only for exchange")
		}
		return nil
	}
	return badRequest("invalid rename mode")
}

func validateLink(r *api.LinkRequest) error {
	if r.ID <= api.RootID {
		return badRequest("invalid node id")
	}
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	if err := validNameMAC(r.NameMAC); err != nil {
		return err
	}
	return validName(r.Name)
}

func validateUnlink(r *api.UnlinkRequest) error {
	if r.Parent == 0 {
		return badRequest("invalid parent")
	}
	return validNameMAC(r.NameMAC)
}

func validateBatch(req *api.BatchRequest) error {
	if len(req.Ops) > api.MaxBatchOps {
		return badRequest("at most %d operations per batch", api.MaxBatchOps)
	}
	return nil
}
