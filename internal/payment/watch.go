package payment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/btcsuite/btcd/chainhash/v2"
	"github.com/btcsuite/btcd/wire/v2"
	"github.com/dgraph-io/badger/v4"
)

// Run polls the node every PollInterval until ctx ends. Node errors are
// logged and retried; Run returns only ctx's error.
func (s *Service) Run(ctx context.Context) error {
	for {
		if err := s.Poll(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("poll failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(s.cfg.PollInterval):
		}
	}
}

// Poll runs one round: follow the chain (handling reorgs), look at the
// mempool, re-evaluate invoices (expiry, confirmations) and credit the
// settled ones.
func (s *Service) Poll(ctx context.Context) error {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	tip, err := s.followChain(ctx)
	if err != nil {
		// Expiry must show even while the node is unreachable.
		if terr := s.tick(); terr != nil {
			s.log.Error("re-evaluate invoices", "err", terr)
		}
		return err
	}
	if err := s.scanMempool(ctx, tip); err != nil {
		return err
	}
	return s.creditDue()
}

// tick re-evaluates the watched invoices at the stored cursor height, for
// time-based changes (expiry, end of the watch window).
func (s *Service) tick() error {
	cur, ok, err := loadCursor(s.db)
	if err != nil || !ok {
		return err
	}
	changed := map[string]bool{}
	err = update(s.db, func(txn *badger.Txn) error {
		clear(changed)
		return s.evaluateActive(txn, cur.Height, nil, changed)
	})
	if err != nil {
		return fmt.Errorf("re-evaluate invoices: %w", err)
	}
	s.notify(changed)
	return nil
}

func loadCursor(db *badger.DB) (cursor, bool, error) {
	var c cursor
	var ok bool
	err := db.View(func(txn *badger.Txn) error {
		var err error
		ok, err = getJSON(txn, []byte(keyCursor), &c)
		return err
	})
	return c, ok, err
}

// followChain scans new blocks up to the node's tip, one transaction per
// block, after rolling back any blocks the node no longer has on its chain.
// It returns the height of the last scanned block.
func (s *Service) followChain(ctx context.Context) (int64, error) {
	tip, err := s.rpc.blockCount(ctx)
	if err != nil {
		return 0, err
	}
	cur, ok, err := loadCursor(s.db)
	if err != nil {
		return 0, err
	}
	if !ok {
		// First start: no invoice can have been paid before now, so start at
		// the current tip rather than at genesis.
		h, err := s.rpc.blockHash(ctx, tip)
		if err != nil {
			return 0, err
		}
		c := cursor{Height: tip, Hash: h.String()}
		err = update(s.db, func(txn *badger.Txn) error {
			if err := txn.Set(blockKey(tip), h[:]); err != nil {
				return err
			}
			return putJSON(txn, []byte(keyCursor), &c)
		})
		if err != nil {
			return 0, fmt.Errorf("init scan cursor: %w", err)
		}
		s.log.Info("scan starts at node tip", "height", tip, "hash", c.Hash)
		return tip, nil
	}
	// Reorg check: is our last block still on the node's best chain?
	onChain := false
	if cur.Height <= tip {
		h, err := s.rpc.blockHash(ctx, cur.Height)
		if err != nil {
			return 0, err
		}
		onChain = h.String() == cur.Hash
	}
	if !onChain {
		if cur, err = s.rollback(ctx, cur, tip); err != nil {
			return 0, err
		}
	}
	for cur.Height < tip {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		h := cur.Height + 1
		hash, err := s.rpc.blockHash(ctx, h)
		if err != nil {
			return 0, err
		}
		blk, err := s.rpc.block(ctx, hash)
		if err != nil {
			return 0, err
		}
		if blk.Header.PrevBlock.String() != cur.Hash {
			// The chain changed under us; the next poll rolls back.
			s.log.Info("chain changed during scan", "height", h)
			return cur.Height, nil
		}
		if err := s.applyBlock(h, hash, blk); err != nil {
			return 0, err
		}
		cur = cursor{Height: h, Hash: hash.String()}
	}
	return cur.Height, nil
}

// rollback finds the fork point between the stored block hashes and the
// node's chain and, in one transaction, unconfirms the payments of the
// blocks above it and moves the cursor there.
func (s *Service) rollback(ctx context.Context, cur cursor, tip int64) (cursor, error) {
	h := min(cur.Height, tip)
	var fork cursor
	for ; h >= 0; h-- {
		node, err := s.rpc.blockHash(ctx, h)
		if err != nil {
			return cur, err
		}
		var stored []byte
		err = s.db.View(func(txn *badger.Txn) error {
			item, err := txn.Get(blockKey(h))
			if err != nil {
				return err
			}
			stored, err = item.ValueCopy(nil)
			return err
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			s.log.Error("reorg deeper than the kept block hashes; assuming fork here", "height", h, "keep", s.cfg.KeepBlocks)
			fork = cursor{Height: h, Hash: node.String()}
			break
		}
		if err != nil {
			return cur, fmt.Errorf("read block hash %d: %w", h, err)
		}
		if string(stored) == string(node[:]) {
			fork = cursor{Height: h, Hash: node.String()}
			break
		}
	}
	if h < 0 {
		return cur, errors.New("no common block with the node (wrong network?)")
	}
	s.log.Warn("chain reorganization", "from_height", cur.Height, "from_hash", cur.Hash, "fork_height", fork.Height, "fork_hash", fork.Hash)
	changed := map[string]bool{}
	err := update(s.db, func(txn *badger.Txn) error {
		clear(changed)
		for bh := fork.Height + 1; bh <= cur.Height; bh++ {
			p := heightPrefix(bh)
			for _, k := range keysWithPrefix(txn, p) {
				op := string(k[len(p):])
				var rec paymentRec
				ok, err := getJSON(txn, pmtKey(op), &rec)
				if err != nil {
					return err
				}
				if ok && rec.Height == bh {
					// Back to unconfirmed; the mempool check decides whether
					// it is still pending or gone.
					rec.Height, rec.BlockHash, rec.Gone = 0, "", false
					if err := putJSON(txn, pmtKey(op), &rec); err != nil {
						return err
					}
				}
				if err := txn.Delete(k); err != nil {
					return err
				}
			}
			if err := txn.Delete(blockKey(bh)); err != nil {
				return err
			}
		}
		if err := putJSON(txn, []byte(keyCursor), &fork); err != nil {
			return err
		}
		return s.evaluateActive(txn, fork.Height, nil, changed)
	})
	if err != nil {
		return cur, fmt.Errorf("roll back to %d: %w", fork.Height, err)
	}
	s.notify(changed)
	return fork, nil
}

// applyBlock records the payments of one block, its hash and the cursor, and
// re-evaluates the watched invoices, all in one transaction.
func (s *Service) applyBlock(h int64, hash chainhash.Hash, blk *wire.MsgBlock) error {
	changed := map[string]bool{}
	blockTime := blk.Header.Timestamp.UTC()
	err := update(s.db, func(txn *badger.Txn) error {
		clear(changed)
		for i, tx := range blk.Transactions {
			if i == 0 {
				continue // coinbase outputs are immature for 100 blocks: not a payment
			}
			txid := tx.TxHash()
			for vout, out := range tx.TxOut {
				id, err := s.watchedInvoice(txn, out.PkScript)
				if err != nil {
					return err
				}
				if id == "" {
					continue
				}
				rec := paymentRec{InvoiceID: id, TxID: txid.String(), Vout: uint32(vout), AmountSat: out.Value}
				op := rec.outpoint()
				if _, err := getJSON(txn, pmtKey(op), &rec); err != nil {
					return err
				}
				if rec.SeenAt.IsZero() {
					// Not seen in the mempool first (e.g. the server was down):
					// the block time is when it was paid.
					rec.SeenAt = blockTime
					if now := s.cfg.Now().UTC(); now.Before(rec.SeenAt) {
						rec.SeenAt = now
					}
				}
				rec.Height, rec.BlockHash, rec.Gone = h, hash.String(), false
				if err := s.putPayment(txn, &rec); err != nil {
					return err
				}
				if err := txn.Set(heightKey(h, op), nil); err != nil {
					return err
				}
				s.log.Info("payment confirmed", "invoice", id, "outpoint", op, "sat", out.Value, "height", h)
			}
		}
		if err := txn.Set(blockKey(h), hash[:]); err != nil {
			return err
		}
		if old := h - int64(s.cfg.KeepBlocks); old >= 0 {
			if err := txn.Delete(blockKey(old)); err != nil {
				return err
			}
		}
		if err := putJSON(txn, []byte(keyCursor), &cursor{Height: h, Hash: hash.String()}); err != nil {
			return err
		}
		return s.evaluateActive(txn, h, nil, changed)
	})
	if err != nil {
		return fmt.Errorf("apply block %d %s: %w", h, hash, err)
	}
	s.notify(changed)
	return nil
}

// watchedInvoice returns the id of the still-watched invoice paid by script,
// or "".
func (s *Service) watchedInvoice(txn *badger.Txn, script []byte) (string, error) {
	item, err := txn.Get(addrKey(script))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up address: %w", err)
	}
	id, err := item.ValueCopy(nil)
	if err != nil {
		return "", err
	}
	if _, err := txn.Get(activeKey(string(id))); errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil // watch window over: ignored
	} else if err != nil {
		return "", err
	}
	return string(id), nil
}

func (s *Service) putPayment(txn *badger.Txn, rec *paymentRec) error {
	op := rec.outpoint()
	if err := putJSON(txn, pmtKey(op), rec); err != nil {
		return err
	}
	return txn.Set(invPmtKey(rec.InvoiceID, op), nil)
}

// scanMempool records unconfirmed payments, marks unconfirmed payments that
// left the mempool as gone, and re-evaluates the watched invoices (expiry).
func (s *Service) scanMempool(ctx context.Context, tip int64) error {
	ids, err := s.rpc.rawMempool(ctx)
	if err != nil {
		return err
	}
	inPool := make(map[string]bool, len(ids))
	var fresh []paymentRec
	var examined []string // cached only once the payments found are committed
	for _, id := range ids {
		txid := id.String()
		inPool[txid] = true
		if _, ok := s.seenTx[txid]; ok {
			continue
		}
		tx, err := s.rpc.rawTx(ctx, id)
		if isNotFound(err) {
			continue // left the mempool meanwhile
		}
		if err != nil {
			return err
		}
		err = s.db.View(func(txn *badger.Txn) error {
			for vout, out := range tx.TxOut {
				inv, err := s.watchedInvoice(txn, out.PkScript)
				if err != nil {
					return err
				}
				if inv != "" {
					fresh = append(fresh, paymentRec{InvoiceID: inv, TxID: txid, Vout: uint32(vout), AmountSat: out.Value})
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		examined = append(examined, txid)
	}
	for txid := range s.seenTx {
		if !inPool[txid] {
			delete(s.seenTx, txid)
		}
	}
	// A transaction mined between our block scan and getrawmempool is in
	// neither; only mark payments gone when the tip did not move.
	after, err := s.rpc.blockCount(ctx)
	if err != nil {
		return err
	}
	markGone := after == tip
	changed := map[string]bool{}
	err = update(s.db, func(txn *badger.Txn) error {
		clear(changed)
		now := s.cfg.Now().UTC()
		for _, f := range fresh {
			rec := f
			ok, err := getJSON(txn, pmtKey(f.outpoint()), &rec)
			if err != nil {
				return err
			}
			if ok && (rec.Height > 0 || !rec.Gone) {
				continue
			}
			if !ok {
				rec.SeenAt = now
				s.log.Info("payment seen in mempool", "invoice", rec.InvoiceID, "outpoint", rec.outpoint(), "sat", rec.AmountSat)
			}
			rec.Gone = false
			if err := s.putPayment(txn, &rec); err != nil {
				return err
			}
		}
		var pool map[string]bool
		if markGone {
			pool = inPool
		}
		return s.evaluateActive(txn, tip, pool, changed)
	})
	if err != nil {
		return fmt.Errorf("record mempool payments: %w", err)
	}
	for _, txid := range examined {
		s.seenTx[txid] = struct{}{}
	}
	s.notify(changed)
	return nil
}

// evaluateActive recomputes every watched invoice at chain height tip and
// stores the ones that changed; accounts of changed invoices are added to
// changed. Invoices past their watch window are frozen and unwatched.
//
// With inPool non-nil it first flags unconfirmed payments whose transaction
// is no longer in the mempool (double spent, evicted, or reorged out and not
// re-accepted), and un-flags those that came back, in the same pass over the
// payments (it used to be a second scan in markGone).
func (s *Service) evaluateActive(txn *badger.Txn, tip int64, inPool map[string]bool, changed map[string]bool) error {
	now := s.cfg.Now().UTC()
	for _, k := range keysWithPrefix(txn, []byte(prefixActive)) {
		id := string(k[len(prefixActive):])
		var pays []paymentRec
		p := invPmtPrefix(id)
		for _, pk := range keysWithPrefix(txn, p) {
			op := string(pk[len(p):])
			var rec paymentRec
			ok, err := getJSON(txn, pmtKey(op), &rec)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if gone := !inPool[rec.TxID]; inPool != nil && rec.Height == 0 && gone != rec.Gone {
				rec.Gone = gone
				if gone {
					s.log.Warn("payment left the mempool", "invoice", id, "outpoint", op)
				}
				if err := putJSON(txn, pmtKey(op), &rec); err != nil {
					return err
				}
			}
			pays = append(pays, rec)
		}
		var inv Invoice
		ok, err := getJSON(txn, invKey(id), &inv)
		if err != nil {
			return err
		}
		if !ok {
			if err := txn.Delete(k); err != nil {
				return err
			}
			continue
		}
		before, err := jsonMarshal(&inv)
		if err != nil {
			return err
		}
		wasSettled := inv.State == StateSettled
		evaluate(&inv, pays, tip, now)
		if inv.State == StateSettled && !wasSettled && !inv.Credited {
			// Credited by creditDue in its own transaction; the due marker
			// makes that survive a crash right after this commit.
			if err := txn.Set(dueKey(id), nil); err != nil {
				return err
			}
		}
		if !now.Before(inv.WatchUntil) {
			if err := txn.Delete(k); err != nil {
				return err
			}
			s.log.Info("invoice watch window over", "invoice", id, "state", inv.State)
		}
		after, err := jsonMarshal(&inv)
		if err != nil {
			return err
		}
		if string(before) != string(after) {
			if err := txn.Set(invKey(id), after); err != nil {
				return err
			}
			changed[inv.AccountID] = true
		}
	}
	return nil
}

// evaluate derives an invoice's state and flags from its payments, the chain
// height and the time. It never takes back a credit.
func evaluate(inv *Invoice, pays []paymentRec, tip int64, now time.Time) {
	req := int64(inv.RequiredConfirmations)
	var onTime, late, confirmed int64
	minConf := int64(-1)
	inv.Payments = inv.Payments[:0]
	for _, p := range pays {
		conf := int64(0)
		if p.Height > 0 && tip >= p.Height {
			conf = tip - p.Height + 1
		}
		isLate := p.SeenAt.After(inv.ExpiresAt)
		inv.Payments = append(inv.Payments, Payment{
			TxID: p.TxID, Vout: p.Vout, AmountSat: p.AmountSat, AmountBTC: FormatBTC(p.AmountSat),
			Height: p.Height, Confirmations: min(conf, req), SeenAt: p.SeenAt, Late: isLate, Gone: !p.live(),
		})
		if !p.live() {
			continue
		}
		if isLate {
			late += p.AmountSat
			continue
		}
		onTime += p.AmountSat
		if conf >= req {
			confirmed += p.AmountSat
		}
		if minConf < 0 || conf < minConf {
			minConf = conf
		}
	}
	if inv.Payments == nil {
		inv.Payments = []Payment{}
	}
	inv.PaidSat, inv.PaidBTC = onTime, FormatBTC(onTime)
	missing := max(inv.AmountSat-onTime, 0)
	inv.MissingSat, inv.MissingBTC = missing, FormatBTC(missing)
	inv.Partial = onTime > 0 && onTime < inv.AmountSat
	inv.Over = onTime > inv.AmountSat
	inv.OverSat = max(onTime-inv.AmountSat, 0)
	inv.PaidLate, inv.LateSat, inv.LateBTC = late > 0, late, ""
	if late > 0 {
		inv.LateBTC = FormatBTC(late)
	}
	inv.Confirmations = min(max(minConf, 0), req)
	if onTime >= inv.AmountSat {
		inv.Reached = true
	}
	inv.PaymentLost = inv.Reached && onTime < inv.AmountSat
	final := !now.Before(inv.WatchUntil)

	switch {
	case inv.Credited || inv.ManualNote != "":
		inv.State = StateSettled
	case confirmed >= inv.AmountSat:
		inv.State = StateSettled
	case onTime >= inv.AmountSat:
		inv.State = StateProcessing
		if final {
			inv.State = StateInvalid // paid, but not confirmed within the watch window
		}
	case now.Before(inv.ExpiresAt):
		inv.State = StateNew
	case inv.Reached && final:
		inv.State = StateInvalid // its payment vanished and never came back
	default:
		inv.State = StateExpired
	}

	var att []string
	if inv.PaidLate && inv.State != StateSettled {
		att = append(att, "payment arrived after expiry: settle by hand or refund")
	}
	if inv.PaymentLost && inv.Credited {
		att = append(att, "payment lost after settlement (reorg or double spend): quota was already credited")
	}
	if inv.State == StateInvalid {
		att = append(att, "paid but not settled within the watch window")
	}
	inv.Attention = strings.Join(att, "; ")
}
